package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestDoctorExitCodes(t *testing.T) {
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.toml")
	if err := os.WriteFile(broken, []byte("[dind]\nmtu = 70000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		args []string
		want int
	}{
		"a FAIL (the config does not load)": {args: []string{"--config", broken, "doctor"}, want: 1},
		"the same as JSON":                  {args: []string{"--config", broken, "doctor", "--json"}, want: 1},
		"a bad flag":                        {args: []string{"--config", broken, "doctor", "--jsn"}, want: 2},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Setenv("BUILD_FAILURE_EXIT_CODE", "")
			t.Setenv("SYSTEM_FAILURE_EXIT_CODE", "")
			if got := run(context.Background(), tc.args); got != tc.want {
				t.Errorf("got exit code %d, want %d", got, tc.want)
			}
		})
	}
}
