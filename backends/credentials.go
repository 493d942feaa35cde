package backends

import (
	"strings"

	"github.com/distribution/reference"
)

// NormalizeRegistry turns a registry as written in credentials
// ("https://index.docker.io/v1/", "registry.example.com:5000/") into the
// host form that image references use ("docker.io",
// "registry.example.com:5000").
func NormalizeRegistry(registry string) string {
	r := strings.TrimSpace(strings.ToLower(registry))
	r = strings.TrimPrefix(r, "https://")
	r = strings.TrimPrefix(r, "http://")
	if i := strings.IndexByte(r, '/'); i >= 0 {
		r = r[:i]
	}
	switch r {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return r
}

// RegistryOf returns the registry host an image is pulled from.
func RegistryOf(image string) string {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return ""
	}
	return NormalizeRegistry(reference.Domain(named))
}

// CredentialFor returns the first of the job's credentials for the image's
// registry.
func (j *Job) CredentialFor(image string) (Credential, bool) {
	registry := RegistryOf(image)
	for _, c := range j.Credentials {
		if NormalizeRegistry(c.Registry) == registry {
			return c, true
		}
	}
	return Credential{}, false
}
