package localjob

import (
	"os"
	"slices"
	"strings"
)

// dedupeVariables keeps the last definition of each key, where it stands.
func dedupeVariables(vars []Variable) []Variable {
	seen := map[string]bool{}
	var out []Variable
	for _, v := range slices.Backward(vars) {
		if seen[v.Key] {
			continue
		}
		seen[v.Key] = true
		out = append(out, v)
	}
	slices.Reverse(out)
	return out
}

// ExpandVariables expands $VAR and ${VAR} in each value that is not raw,
// once, against the variables as written, the way gitlab-runner does: an
// unknown variable expands to nothing and $$ is a literal $.
func ExpandVariables(vars []Variable) []Variable {
	index := map[string]string{}
	for _, v := range vars {
		index[v.Key] = v.Value
	}
	get := func(key string) (string, bool) {
		v, ok := index[key]
		return v, ok
	}
	out := make([]Variable, len(vars))
	for i, v := range vars {
		if !v.Raw {
			v.Value = expandString(v.Value, get)
		}
		out[i] = v
	}
	return out
}

func expandString(s string, get func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	return os.Expand(s, func(key string) string {
		switch key {
		case "$":
			return "$"
		case "*", "#", "@", "!", "?", "-", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9":
			return ""
		}
		v, _ := get(key)
		return v
	})
}
