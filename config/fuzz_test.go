package config

import "testing"

// FuzzConfig feeds admin TOML through parsing, validation and a decision:
// a bad file must give an error, never a panic or a config that fails its
// own validation.
func FuzzConfig(f *testing.F) {
	f.Add([]byte("builds_dir = \"/b\"\n[policy]\nallowed_backends = [\"socket\", \"dind\"]\n[[policy.rule]]\nprojects = [\"g/**\"]\nprotected = true\nmax_memory = \"1g\"\n[docker]\nmemory = \"2g\"\ncpus = \"1.5\"\nulimits = [\"nofile=1:2\"]\nvolumes = [\"/a:/b:ro\", \"/c\"]\n[dind]\nlayer_cache = \"project\"\n"))
	f.Add([]byte("memroy = 1\n"))
	f.Add([]byte("[docker]\ncpus = \"NaN\"\n"))
	f.Add([]byte("docker = { privileged = true }\n"))
	f.Add([]byte("[[policy.rule]]\nallowed_backends = []\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.toml", data)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("a parsed config fails validation: %v", err)
		}
		_, _ = cfg.Decide(Subject{ProjectPath: "g/p", ProjectID: 1, Ref: "main"}, Request{Image: "busybox", Memory: "1g", CPUs: "1"})
	})
}
