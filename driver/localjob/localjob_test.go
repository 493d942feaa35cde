package localjob

import (
	"strings"
	"testing"
)

func TestPlural(t *testing.T) {
	for _, tc := range []struct {
		n          int
		what, want string
	}{{1, "untracked file is", "1 untracked file is"}, {3, "untracked file is", "3 untracked files are"}, {2, "file", "2 files"}, {1, "file", "1 file"}} {
		if got := plural(tc.n, tc.what); got != tc.want {
			t.Errorf("plural(%d, %q): got %q, want %q", tc.n, tc.what, got, tc.want)
		}
	}
}

func TestSlug(t *testing.T) {
	for in, want := range map[string]string{
		"feature/Login_Page":    "feature-login-page",
		"group/sub/app":         "group-sub-app",
		"-v1.2-":                "v1-2",
		strings.Repeat("a", 70): strings.Repeat("a", 63),
	} {
		if got := slug(in); got != want {
			t.Errorf("slug(%q): got %q, want %q", in, got, want)
		}
	}
}

func TestParseVars(t *testing.T) {
	vars, err := parseVars([]string{"A=1", "B=x=y", "EMPTY="})
	if err != nil || len(vars) != 3 || vars[1].Value != "x=y" || vars[2].Value != "" {
		t.Errorf("got %+v, %v", vars, err)
	}
	for _, bad := range []string{"NOVALUE", "=x", "A-B=1", "1A=x"} {
		if _, err := parseVars([]string{bad}); err == nil || !strings.Contains(err.Error(), "want KEY=VALUE") {
			t.Errorf("parseVars(%q): got %v, want an error", bad, err)
		}
	}
}
