package driver

import (
	"fmt"
	"io"
	"strings"

	"github.com/berthci/berth/config"
)

// Explain prints which policy rule a job gets and what it is granted or why
// it is refused, for admins: `berth policy explain`. It reads the job the
// way prepare does; backend is what the job would set as BERTH_BACKEND. It
// returns the refusal, if any, after printing it.
func Explain(w io.Writer, cfg *config.Config, responsePath, backend string) error {
	env := map[string]string{"JOB_RESPONSE_FILE": responsePath}
	if backend != "" {
		env[customEnvPrefix+"BERTH_BACKEND"] = backend
	}
	job, err := LoadJob(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		return err
	}
	if job.Backend == "" {
		for _, v := range job.Variables {
			if v.Key == "BERTH_BACKEND" {
				job.Backend = v.Value
			}
		}
	}
	if job.Image.Name == "" {
		job.Image.Name = cfg.Docker.Image
	}
	subj, req := job.Subject(), job.Request()
	eff := cfg.PolicyFor(subj)
	protected := "unprotected"
	if subj.Protected {
		protected = "protected"
	}
	fmt.Fprintf(w, "config:     %s\n", orDefault(cfg.Path, "built-in defaults"))
	fmt.Fprintf(w, "project:    %s (id %d), namespace %s\n", subj.ProjectPath, subj.ProjectID, subj.Namespace())
	fmt.Fprintf(w, "ref:        %s (%s)\n", subj.Ref, protected)
	fmt.Fprintf(w, "rule:       %s\n", orDefault(eff.Rule, "none matched: the [policy] values apply"))
	fmt.Fprintf(w, "requested:  backend %q, image %q, services %v, pull policy %v, memory %q, cpus %q\n",
		orDefault(req.Backend, "(default)"), req.Image, req.Services, req.PullPolicies, req.Memory, req.CPUs)
	fmt.Fprintf(w, "policy:     allowed backends %s (default %s), images %s, services %s, pull policies %s, services limit %d\n",
		strings.Join(eff.AllowedBackends, ", "), eff.DefaultBackend, listOrAny(eff.AllowedImages), listOrAny(eff.AllowedServices),
		listOrAny(eff.AllowedPullPolicies), eff.ServicesLimit)
	d, err := cfg.Decide(subj, req)
	if err != nil {
		fmt.Fprintf(w, "decision:   REFUSED: %v\n", err)
		return buildErr(err)
	}
	fmt.Fprintf(w, "decision:   allowed: backend %s, pull policies %v", d.Backend, d.PullPolicies)
	if d.Memory > 0 {
		fmt.Fprintf(w, ", memory %d bytes", d.Memory)
	}
	if d.NanoCPUs > 0 {
		fmt.Fprintf(w, ", %g CPUs", float64(d.NanoCPUs)/1e9)
	}
	if d.DindPrivileged != nil {
		fmt.Fprintf(w, ", dind privileged %v", *d.DindPrivileged)
	}
	if d.LayerCache != "" {
		fmt.Fprintf(w, ", layer cache %s", d.LayerCache)
	}
	if d.SocketGuard != nil {
		fmt.Fprintf(w, ", socket guard %v", *d.SocketGuard)
	}
	fmt.Fprintln(w)
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func listOrAny(l []string) string {
	if len(l) == 0 {
		return "any"
	}
	return strings.Join(l, ", ")
}
