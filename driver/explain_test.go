package driver

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthci/berth/config"
)

func TestExplain(t *testing.T) {
	cfg, err := config.Parse("explain.toml", []byte(`
[policy]
allowed_backends = ["socket"]
[[policy.rule]]
name = "trusted"
projects = ["ops/**"]
protected = true
allowed_backends = ["socket", "dind"]
`))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cases := map[string]struct {
		payload string
		backend string
		wantErr bool
		want    []string
	}{
		"rule grants dind": {
			payload: `{"id":1,"job_info":{"project_id":2,"project_full_path":"ops/infra"},"git_info":{"ref":"main","protected":true},"image":{"name":"alpine"}}`,
			backend: "dind", want: []string{"rule:       trusted", "decision:   allowed: backend dind"},
		},
		"backend from the payload's variables": {
			payload: `{"id":1,"job_info":{"project_id":2,"project_full_path":"ops/infra"},"git_info":{"ref":"main","protected":true},"image":{"name":"alpine"},"variables":[{"key":"BERTH_BACKEND","value":"dind"}]}`,
			want:    []string{"decision:   allowed: backend dind"},
		},
		"no rule, refused": {
			payload: `{"id":1,"job_info":{"project_id":2,"project_full_path":"ops/infra"},"git_info":{"ref":"topic","protected":false},"image":{"name":"alpine"}}`,
			backend: "dind", wantErr: true, want: []string{"none matched", "REFUSED"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".json")
			if err := os.WriteFile(path, []byte(tc.payload), 0o644); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err := Explain(&out, cfg, path, tc.backend)
			if tc.wantErr != (err != nil) || (err != nil && !errors.Is(err, ErrBuild)) {
				t.Errorf("got error %v, want error %v (a build failure)", err, tc.wantErr)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
