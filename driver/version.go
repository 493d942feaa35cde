package driver

import (
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
)

// devVersion is the version of a build that carries no release version.
const devVersion = "0.1.0-dev"

// What a release build sets with the linker:
//
//	-ldflags "-X github.com/berthci/berth/driver.Version=v0.3.0
//	  -X github.com/berthci/berth/driver.Commit=$(git rev-parse HEAD)
//	  -X github.com/berthci/berth/driver.BuildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
//
// Left unset, Version and Commit are filled at start from the Go
// toolchain's build info (see [Build]), so that `go install ...@v0.3.0` and
// a plain `go build` in a git checkout still say what they are.
var (
	// Version is berth's version. It names berth in the job log and in the
	// config stage's driver.version.
	Version = devVersion
	// Commit is the source revision, with "-dirty" when the work tree had
	// uncommitted changes.
	Commit = ""
	// BuildDate is when the binary was built, RFC 3339 in UTC.
	BuildDate = ""
)

// BuildInfo describes this berth binary.
type BuildInfo struct {
	Version string `json:"version"`
	// Commit is empty when neither the linker nor the toolchain knew it.
	Commit string `json:"commit,omitempty"`
	// CommitTime is the revision's commit time, from the toolchain's VCS
	// stamp; it is empty when the commit came from the linker.
	CommitTime string `json:"commit_time,omitempty"`
	BuildDate  string `json:"build_date,omitempty"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	// BuildTags are the -tags the binary was built with.
	BuildTags []string `json:"build_tags,omitempty"`
	// CGOEnabled is true for a binary linked against the C library. berth
	// mounts itself into job-side containers (the socket guard, the DinD DNS
	// relay), where only a static binary (CGO_ENABLED=0) runs.
	CGOEnabled bool `json:"cgo_enabled"`
}

// build is the binary's build information, resolved once at start.
var build BuildInfo

func init() {
	bi, _ := debug.ReadBuildInfo()
	build = resolveBuildInfo(Version, Commit, BuildDate, bi)
	Version, Commit = build.Version, build.Commit
}

// Build returns this binary's build information.
func Build() BuildInfo {
	b := build
	b.BuildTags = append([]string(nil), build.BuildTags...)
	return b
}

// pseudoVersion matches the timestamp and revision of a Go pseudo-version
// (v0.0.0-20260511093000-16a28c6f0e2b), which the toolchain makes up for an
// untagged commit; the revision is shown as the commit instead.
var pseudoVersion = regexp.MustCompile(`[0-9]{14}-[0-9a-f]{12}`)

// resolveBuildInfo combines what the linker set (version, commit, date) with
// the toolchain's build info bi (nil when the binary has none). The linker's
// values win; the toolchain fills the rest.
func resolveBuildInfo(version, commit, date string, bi *debug.BuildInfo) BuildInfo {
	b := BuildInfo{
		Version:   version,
		Commit:    commit,
		BuildDate: date,
		GoVersion: runtime.Version(),
		OS:        runtime.GOOS,
		Arch:      runtime.GOARCH,
	}
	if b.Version == "" {
		b.Version = devVersion
	}
	if bi == nil {
		return b
	}
	if b.Version == devVersion {
		if v := bi.Main.Version; v != "" && v != "(devel)" && !pseudoVersion.MatchString(v) {
			b.Version = v
		}
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if b.Commit == "" && settings["vcs.revision"] != "" {
		b.Commit = settings["vcs.revision"]
		if settings["vcs.modified"] == "true" {
			b.Commit += "-dirty"
		}
		b.CommitTime = settings["vcs.time"]
	}
	if tags := settings["-tags"]; tags != "" {
		b.BuildTags = strings.Split(tags, ",")
	}
	b.CGOEnabled = settings["CGO_ENABLED"] == "1"
	return b
}
