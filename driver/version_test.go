package driver

import (
	"reflect"
	"runtime"
	"runtime/debug"
	"testing"
)

func TestResolveBuildInfo(t *testing.T) {
	vcs := func(version string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/berthci/berth", Version: version}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	const rev = "16a28c6f0e2b4d1c9a7e5f3b2d1c0a9e8f7d6c5b"
	tests := map[string]struct {
		version, commit, date string
		bi                    *debug.BuildInfo
		want                  BuildInfo
	}{
		"release build with ldflags wins over the toolchain": {
			version: "v0.3.0", commit: "abc123", date: "2026-11-29T10:00:00Z",
			bi:   vcs("(devel)", "vcs.revision", rev, "vcs.modified", "true", "vcs.time", "2026-11-28T09:00:00Z", "-tags", "remote,containers_image_openpgp", "CGO_ENABLED", "0"),
			want: BuildInfo{Version: "v0.3.0", Commit: "abc123", BuildDate: "2026-11-29T10:00:00Z", BuildTags: []string{"remote", "containers_image_openpgp"}},
		},
		"go build in a dirty checkout": {
			version: devVersion,
			bi:      vcs("v0.0.0-20261128090000-16a28c6f0e2b+dirty", "vcs.revision", rev, "vcs.modified", "true", "vcs.time", "2026-11-28T09:00:00Z", "CGO_ENABLED", "1"),
			want:    BuildInfo{Version: devVersion, Commit: rev + "-dirty", CommitTime: "2026-11-28T09:00:00Z", CGOEnabled: true},
		},
		"go build in a clean checkout": {
			version: devVersion,
			bi:      vcs("(devel)", "vcs.revision", rev, "vcs.modified", "false", "vcs.time", "2026-11-28T09:00:00Z"),
			want:    BuildInfo{Version: devVersion, Commit: rev, CommitTime: "2026-11-28T09:00:00Z"},
		},
		"go install of a tag": {
			version: devVersion,
			bi:      vcs("v0.3.0"),
			want:    BuildInfo{Version: "v0.3.0"},
		},
		"go build without VCS stamp": {
			version: devVersion,
			bi:      vcs("(devel)", "-buildvcs", "false"),
			want:    BuildInfo{Version: devVersion},
		},
		"ldflags set an empty version": {
			version: "",
			want:    BuildInfo{Version: devVersion},
		},
		"no build info": {
			version: "v1.2.3", commit: "def456",
			want: BuildInfo{Version: "v1.2.3", Commit: "def456"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := resolveBuildInfo(tc.version, tc.commit, tc.date, tc.bi)
			tc.want.GoVersion, tc.want.OS, tc.want.Arch = runtime.Version(), runtime.GOOS, runtime.GOARCH
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestVersionIsResolved(t *testing.T) {
	if b := Build(); b.Version != Version || b.Commit != Commit {
		t.Errorf("got Build() version %q commit %q, want Version %q and Commit %q", b.Version, b.Commit, Version, Commit)
	}
	if Version == "" {
		t.Error("got an empty Version, want the linker's, the toolchain's or " + devVersion)
	}
}
