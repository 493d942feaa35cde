package dockerproxy

import (
	"net"
	"net/url"
	"strings"

	"github.com/distribution/reference"
)

// Pulls, pushes and logins make the engine fetch from a registry, on the
// host's own network and with its addresses: a registry name at a loopback
// or link-local address (or localhost) would let a job read services that
// listen only there, the cloud metadata service (169.254.169.254) among
// them, through the engine's answers and errors. The guard refuses such
// registries unless the admin listed them (docker.guard_local_registries).
// It cannot see what a DNS name resolves to: it has no network.

// localHost reports whether host (without port) is a loopback, link-local
// or unspecified address, or a localhost or metadata name.
func localHost(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") || host == "metadata" || host == "metadata.google.internal" {
		return true
	}
	if zone := strings.IndexByte(host, '%'); zone >= 0 {
		host = host[:zone]
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	return ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsInterfaceLocalMulticast()
}

// checkRegistry refuses a registry (host[:port]) at a local address that
// the admin did not allow. what says what the job tried.
func (f *Filter) checkRegistry(registry, what string) error {
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	if !localHost(host) {
		return nil
	}
	for _, allowed := range f.localRegistries {
		if strings.EqualFold(allowed, registry) {
			return nil
		}
	}
	return refuse("%s: registry %q is at a loopback or link-local address, which the engine would reach on the host's own network; the runner admin can allow it in docker.guard_local_registries", what, registry)
}

// checkImageRegistry checks the registry of an image reference.
func (f *Filter) checkImageRegistry(ref, what string) error {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		// Not a reference the engine would fetch either; a name such as
		// "localhost:5000/x" always parses, so nothing local slips by.
		return nil
	}
	return f.checkRegistry(reference.Domain(named), what)
}

// checkAuthServer checks a login's server address: a host[:port], or a
// URL as older clients send it.
func (f *Filter) checkAuthServer(server string) error {
	if server == "" {
		return nil
	}
	host := server
	if strings.Contains(server, "://") {
		u, err := url.Parse(server)
		if err != nil {
			return refuse("login: server address %q is not a URL or host", server)
		}
		host = u.Host
	} else if i := strings.IndexByte(server, '/'); i >= 0 {
		host = server[:i]
	}
	return f.checkRegistry(host, "login")
}
