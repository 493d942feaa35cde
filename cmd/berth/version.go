package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/driver"
)

// versionInfo is what `berth version` reports.
type versionInfo struct {
	driver.BuildInfo
	// Backends are the backends built into this binary.
	Backends []string `json:"backends"`
	// MissingBackends are the backends a build tag left out.
	MissingBackends []string `json:"missing_backends,omitempty"`
}

// versionCommand is `berth version`.
func versionCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version [--json]",
		Short: "Print berth's version, commit, Go version and built-in backends",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := versionInfo{BuildInfo: driver.Build(), Backends: backends.Available()}
			for _, name := range backends.Names() {
				if !slices.Contains(info.Backends, name) {
					info.MissingBackends = append(info.MissingBackends, name)
				}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			return writeVersion(cmd.OutOrStdout(), info)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the same as a JSON object")
	return cmd
}

const (
	unknownCommit = `unknown (a release build sets it with -ldflags "-X github.com/berthci/berth/driver.Commit=..."; ` +
		"go build in a git checkout records it unless -buildvcs=false)"
	cgoWarning = "enabled, so not static: the socket guard, the podman guard and the DinD DNS relay " +
		"need a berth built with CGO_ENABLED=0"
)

// writeVersion prints info for people, one fact a line.
func writeVersion(w io.Writer, info versionInfo) error {
	commit := info.Commit
	if commit == "" {
		commit = unknownCommit
	} else if info.CommitTime != "" {
		commit += " (" + info.CommitTime + ")"
	}
	lines := [][2]string{
		{"commit", commit},
		{"built", info.BuildDate},
		{"go", info.GoVersion},
		{"platform", info.OS + "/" + info.Arch},
		{"backends", strings.Join(info.Backends, ", ")},
		{"not built in", strings.Join(info.MissingBackends, ", ")},
		{"build tags", strings.Join(info.BuildTags, ", ")},
	}
	if info.CGOEnabled {
		lines = append(lines, [2]string{"cgo", cgoWarning})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "berth %s\n", info.Version)
	for _, l := range lines {
		if l[1] != "" {
			fmt.Fprintf(&b, "  %-13s %s\n", l[0]+":", l[1])
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
