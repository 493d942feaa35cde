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
	t := reflect.TypeOf(v)
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type.Name() != "Duration" {
			keys = append(keys, tomlKeys(reflect.New(f.Type).Elem().Interface())...)
			continue
		}
		if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct {
			keys = append(keys, tag)
			keys = append(keys, tomlKeys(reflect.New(f.Type.Elem()).Elem().Interface())...)
			continue
		}
		keys = append(keys, tag)
	}
	return keys
}
