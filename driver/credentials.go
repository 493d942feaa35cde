package driver

import (
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

// authConfigDTO is the part of a DOCKER_AUTH_CONFIG document berth reads.
type authConfigDTO struct {
	Auths map[string]struct {
		Auth     string `json:"auth"`
		Username string `json:"username"`
		Password string `json:"password"`
	} `json:"auths"`
}

// credentials collects the job's registry logins, most specific first: the
// job's DOCKER_AUTH_CONFIG, the job payload's credentials, then the admin's
// docker.auth_config.
func (j *Job) credentials(cfg *config.Config) ([]backends.Credential, error) {
	var creds []backends.Credential
	jobAuth := j.AuthConfig
	if jobAuth == "" {
		for _, v := range j.Variables {
			if v.Key == "DOCKER_AUTH_CONFIG" && !v.File {
				jobAuth = v.Value
			}
		}
	}
	if jobAuth != "" {
		parsed, err := parseAuthConfig(jobAuth)
		if err != nil {
			return nil, buildErr(fmt.Errorf("the job's DOCKER_AUTH_CONFIG variable: %w", err))
		}
		creds = append(creds, parsed...)
	}
	for _, c := range j.Credentials {
		if c.Type == "registry" && c.URL != "" {
			creds = append(creds, backends.Credential{Registry: c.URL, Username: c.Username, Password: c.Password})
		}
	}
	if cfg.Docker.AuthConfig != "" {
		parsed, err := parseAuthConfig(cfg.Docker.AuthConfig)
		if err != nil {
			return nil, systemErr(fmt.Errorf("docker.auth_config in the berth config: %w", err))
		}
		creds = append(creds, parsed...)
	}
	return creds, nil
}

// parseAuthConfig reads the "auths" of a Docker config.json document.
func parseAuthConfig(raw string) ([]backends.Credential, error) {
	var doc authConfigDTO
	if err := decodeStrict([]byte(raw), maxJSONDepth, &doc); err != nil {
		return nil, fmt.Errorf("not a valid Docker config.json document: %v", err)
	}
	var creds []backends.Credential
	for registry, a := range doc.Auths {
		c := backends.Credential{Registry: registry, Username: a.Username, Password: a.Password}
		if a.Auth != "" {
			decoded, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return nil, fmt.Errorf("auths[%q].auth is not base64 of user:password", registry)
			}
			user, pass, ok := strings.Cut(string(decoded), ":")
			if !ok {
				return nil, fmt.Errorf("auths[%q].auth is not base64 of user:password", registry)
			}
			c.Username, c.Password = user, pass
		}
		creds = append(creds, c)
	}
	return creds, nil
}
