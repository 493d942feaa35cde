package config

import (
	"os"
	"reflect"
	"regexp"
	"testing"
)

// TestExampleDocumentsEveryKey keeps config/example.toml true: uncommented,
// it must parse, and it must mention every key berth knows.
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("example.toml")
	if err != nil {
		t.Fatal(err)
	}
	uncommented := regexp.MustCompile(`(?m)^# ([a-z_]+ = .*?)(\s+# .*)?$`).ReplaceAllString(string(data), "$1")
	if _, err := Parse("example.toml (uncommented)", []byte(uncommented)); err != nil {
		t.Fatalf("uncommented example does not parse: %v", err)
	}
	for _, key := range tomlKeys(Config{}) {
		documented := regexp.MustCompile(`(?m)^#\s+` + regexp.QuoteMeta(key) + ` = |\[\[policy\.` + regexp.QuoteMeta(key) + `\]\]`)
		if !documented.Match(data) {
			t.Errorf("example.toml does not document %q", key)
		}
	}
}

// tomlKeys lists the keys of a config struct, for documentation checks.
func tomlKeys(v any) []string {
	var keys []string
	for _, k := range configKeys(reflect.TypeOf(v)) {
		keys = append(keys, k.name)
	}
	return keys
}

// configKey is one key of the config file, found in the structs' toml tags.
type configKey struct {
	// path is the dotted key, e.g. "docker.memory" or "policy.rule.name";
	// name is its last element.
	path, name string
	field      reflect.StructField
	// index finds the field from Config; nil for the keys of an array of
	// tables, which have no defaults.
	index []int
	// tables marks an array of tables ([[policy.rule]]) rather than a value.
	tables bool
}

// configKeys lists the keys of config struct type t, descending into tables
// and arrays of tables.
func configKeys(t reflect.Type) []configKey {
	return walkKeys(t, "", []int{})
}

func walkKeys(t reflect.Type, prefix string, index []int) []configKey {
	var keys []configKey
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		var at []int
		if index != nil {
			at = append(append([]int{}, index...), i)
		}
		switch {
		case f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[Duration]():
			keys = append(keys, walkKeys(f.Type, prefix+tag+".", at)...)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			keys = append(keys, configKey{path: prefix + tag, name: tag, field: f, index: at, tables: true})
			keys = append(keys, walkKeys(f.Type.Elem(), prefix+tag+".", nil)...)
		default:
			keys = append(keys, configKey{path: prefix + tag, name: tag, field: f, index: at})
		}
	}
	return keys
}
