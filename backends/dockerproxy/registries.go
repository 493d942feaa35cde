package dockerproxy

import (
	"encoding/base64"
	"encoding/json"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/registry"
)

// Pulls, pushes and logins make the engine fetch from a registry, on the
// host's own network and with its addresses: a registry name at a loopback
// or link-local address (or localhost) would let a job read services that
// listen only there, the cloud metadata service (169.254.169.254) among
// them, through the engine's answers and errors. The guard refuses such
// registries unless the admin listed them (docker.guard_local_registries).
// The engine host's own name (from its /info) counts as local too: its
// /etc/hosts maps it to the loopback address on common distributions. It
// cannot see what any other DNS name resolves to: it has no network.

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
		ip = legacyIPv4(host)
	}
	if ip == nil {
		return false
	}
	return ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsInterfaceLocalMulticast()
}

// legacyIPv4 parses the IPv4 forms that the C library's resolver accepts
// besides the dotted quad (inet_aton): one to four parts, each decimal,
// octal (leading 0) or hex (0x), the last filling the remaining bytes, as
// in 2130706433, 0x7f.1 or 127.1, all 127.0.0.1. An engine that resolves
// through the C library reaches them; nil if host is not such a form.
func legacyIPv4(host string) net.IP {
	parts := strings.Split(host, ".")
	if len(parts) > 4 {
		return nil
	}
	var addr uint64
	for i, p := range parts {
		base := 10
		switch {
		case len(p) > 2 && (p[:2] == "0x" || p[:2] == "0X"):
			base, p = 16, p[2:]
		case len(p) > 1 && p[0] == '0':
			base, p = 8, p[1:]
		}
		n, err := strconv.ParseUint(p, base, 32)
		if err != nil {
			return nil
		}
		if i < len(parts)-1 {
			if n > 0xff {
				return nil
			}
			addr |= n << (8 * (3 - uint(i)))
			continue
		}
		if n >= 1<<(8*(4-uint(i))) {
			return nil
		}
		addr |= n
	}
	return net.IPv4(byte(addr>>24), byte(addr>>16), byte(addr>>8), byte(addr))
}

// local reports whether host is a local address or name (localHost), or
// one of the engine host's own names, which its /etc/hosts maps to the
// loopback address on common distributions.
func (f *Filter) local(host string) bool {
	if localHost(host) {
		return true
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	for _, name := range f.hostNames {
		if host == name {
			return true
		}
	}
	return false
}

// checkRegistry refuses a registry (host[:port]) at a local address that
// the admin did not allow. what says what the job tried.
func (f *Filter) checkRegistry(registry, what string) error {
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	if !f.local(host) {
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
		if what == "image search" {
			// A search term is free text; a name such as
			// "localhost:5000/x" always parses, so nothing local
			// slips by.
			return nil
		}
		// Podman also reads transports (docker://, oci-archive:, ...).
		return refuse("%s of %q: not an image reference (name[:tag][@digest]); give the image by its name", what, ref)
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

// pullBase pulls a build's base image for the guard to read, with the
// credentials the docker CLI sent for the build (X-Registry-Config) for
// the image's registry. The name is then one the job pulled.
func (r *request) pullBase(ref string) error {
	if err := r.f.up.Pull(r.ctx, ref, buildAuth(r.Header.Get("X-Registry-Config"), ref)); err != nil {
		return err
	}
	r.f.gaveName(ref)
	return nil
}

// buildAuth picks from a build's X-Registry-Config (base64 JSON, registry
// to credentials) those of ref's registry, in the X-Registry-Auth form; ""
// when there are none.
func buildAuth(header, ref string) string {
	if header == "" {
		return ""
	}
	data, err := base64.URLEncoding.DecodeString(header)
	if err != nil {
		if data, err = base64.StdEncoding.DecodeString(header); err != nil {
			return ""
		}
	}
	var configs map[string]registry.AuthConfig
	if json.Unmarshal(data, &configs) != nil {
		return ""
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ""
	}
	domain := reference.Domain(named)
	keys := []string{domain, "https://" + domain, "http://" + domain}
	if domain == "docker.io" {
		keys = append([]string{"https://index.docker.io/v1/", "index.docker.io"}, keys...)
	}
	for _, k := range keys {
		if ac, ok := configs[k]; ok {
			encoded, err := registry.EncodeAuthConfig(ac)
			if err == nil {
				return encoded
			}
		}
	}
	return ""
}
