package config

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// The README's config reference sits between these markers: one markdown
// table per config table, under a heading naming it ("Top-level keys",
// "`[docker]`", "`[[policy.rule]]`"), with the columns key, type, default
// and meaning.
const (
	referenceBegin = "<!-- config-reference:begin -->"
	referenceEnd   = "<!-- config-reference:end -->"
)

// TestReadmeConfigReference keeps README.md's config reference, the config
// structs and config/example.toml in step: the same keys in all three, each
// key's type as the structs have it, and each default as Default() sets it
// and example.toml shows it.
func TestReadmeConfigReference(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("example.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range checkReference(readme, example) {
		t.Error(p)
	}
}

// TestReadmeConfigReferenceFindsDrift feeds the check drifted copies of the
// README and example.toml: each problem must be reported naming the key.
func TestReadmeConfigReferenceFindsDrift(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("example.toml")
	if err != nil {
		t.Fatal(err)
	}
	// row finds the README's row of a key in the table of a section.
	row := func(section, key string) string {
		t.Helper()
		rows, _, err := parseReference(readme)
		if err != nil {
			t.Fatal(err)
		}
		path := key
		if section != "" {
			path = section + "." + key
		}
		r, ok := rows[path]
		if !ok {
			t.Fatalf("the README documents no %s", path)
		}
		return r.text
	}
	replace := func(data []byte, old, new string) []byte {
		t.Helper()
		if !bytes.Contains(data, []byte(old)) {
			t.Fatalf("the drift case's text %q is not in the file", old)
		}
		return bytes.Replace(data, []byte(old), []byte(new), 1)
	}
	memory := row("docker", "memory")
	tests := map[string]struct {
		readme, example []byte
		want            []string
	}{
		"README row missing": {
			readme: replace(readme, memory+"\n", ""),
			want:   []string{`"docker.memory"`, "not in README.md"},
		},
		"README row for no key": {
			readme: replace(readme, memory+"\n", memory+"\n"+strings.Replace(memory, "`memory`", "`memroy`", 1)+"\n"),
			want:   []string{`"docker.memroy"`, "not in the config structs"},
		},
		"README default wrong": {
			readme: replace(readme, row("docker", "stop_timeout"), strings.Replace(row("docker", "stop_timeout"), "`\"2s\"`", "`\"3s\"`", 1)),
			want:   []string{`"docker.stop_timeout"`, `"3s"`, "Default()"},
		},
		"README type wrong": {
			readme: replace(readme, row("docker", "pids_limit"), strings.Replace(row("docker", "pids_limit"), "| integer |", "| string |", 1)),
			want:   []string{`"docker.pids_limit"`, `type "string"`, `"integer"`},
		},
		"README rule key with a default": {
			readme: replace(readme, row("policy.rule", "max_cpus"), strings.Replace(row("policy.rule", "max_cpus"), "| unset |", "| `\"4\"` |", 1)),
			want:   []string{`"policy.rule.max_cpus"`, "unset"},
		},
		"example key missing": {
			example: replace(example, "# stop_timeout = \"2s\"\n", ""),
			want:    []string{`"docker.stop_timeout"`, "not in config/example.toml"},
		},
		"example key for no key": {
			example: replace(example, "# stop_timeout = \"2s\"\n", "# stop_timeout = \"2s\"\n# stop_timout = \"2s\"\n"),
			want:    []string{`"docker.stop_timout"`, "not in the config structs"},
		},
		"example value not the default": {
			example: replace(example, "# pids_limit = 0 ", "# pids_limit = 10 "),
			want:    []string{`"docker.pids_limit"`, "10", "Default()"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r, e := readme, example
			if tc.readme != nil {
				r = tc.readme
			}
			if tc.example != nil {
				e = tc.example
			}
			problems := checkReference(r, e)
			if len(problems) == 0 {
				t.Fatal("got no problem, want one")
			}
			all := strings.Join(problems, "\n")
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("the problems do not mention %s:\n%s", w, all)
				}
			}
		})
	}
}

// referenceRow is one row of the README's config reference.
type referenceRow struct {
	line                int
	text                string
	typ, def, meaning   string
	section, key, where string
}

var (
	sectionHeadingRe = regexp.MustCompile("^#{2,6} .*`(\\[\\[?[a-z_.]+\\]\\]?)`")
	topHeadingRe     = regexp.MustCompile(`^#{2,6} Top-level keys\s*$`)
	separatorCellRe  = regexp.MustCompile(`^:?-{3,}:?$`)
	backtickedRe     = regexp.MustCompile("^`([^`]+)`$")
)

// parseReference reads the README's config reference into rows by dotted
// key path.
func parseReference(readme []byte) (map[string]referenceRow, []string, error) {
	text := string(readme)
	begin, end := strings.Index(text, referenceBegin), strings.Index(text, referenceEnd)
	if begin < 0 || end < begin {
		return nil, nil, fmt.Errorf("README.md has no config reference between %s and %s", referenceBegin, referenceEnd)
	}
	firstLine := strings.Count(text[:begin], "\n") + 1
	rows := map[string]referenceRow{}
	var problems []string
	section, inSection := "", false
	sc := bufio.NewScanner(strings.NewReader(text[begin:end]))
	for n := firstLine; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "#"):
			if m := sectionHeadingRe.FindStringSubmatch(line); m != nil {
				section, inSection = strings.Trim(m[1], "[]"), true
			} else if topHeadingRe.MatchString(line) {
				section, inSection = "", true
			} else {
				problems = append(problems, fmt.Sprintf("README.md:%d: heading %q in the config reference names no config table: write \"Top-level keys\" or the table in backticks, e.g. `[docker]`", n, line))
				inSection = false
			}
			continue
		case !strings.HasPrefix(line, "|"):
			continue
		}
		cells := splitRow(line)
		if len(cells) == 0 || cells[0] == "key" || separatorCellRe.MatchString(cells[0]) {
			continue
		}
		if !inSection {
			problems = append(problems, fmt.Sprintf("README.md:%d: a config reference row before any table heading", n))
			continue
		}
		if len(cells) != 4 {
			problems = append(problems, fmt.Sprintf("README.md:%d: a config reference row has %d cells, want 4 (key, type, default, meaning)", n, len(cells)))
			continue
		}
		m := backtickedRe.FindStringSubmatch(cells[0])
		if m == nil {
			problems = append(problems, fmt.Sprintf("README.md:%d: key cell %q must be the key in backticks", n, cells[0]))
			continue
		}
		path := m[1]
		if section != "" {
			path = section + "." + m[1]
		}
		if prev, dup := rows[path]; dup {
			problems = append(problems, fmt.Sprintf("README.md:%d: %q is documented twice (first on line %d)", n, path, prev.line))
			continue
		}
		rows[path] = referenceRow{line: n, text: sc.Text(), typ: cells[1], def: cells[2], meaning: cells[3],
			section: section, key: m[1], where: fmt.Sprintf("README.md:%d", n)}
	}
	return rows, problems, nil
}

// splitRow splits a markdown table row into trimmed cells at the pipes
// that are not escaped.
func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "|")
	line = strings.TrimSuffix(line, "|")
	var cells []string
	var cell strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cell.WriteByte('|')
			i++
		case line[i] == '|':
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
		default:
			cell.WriteByte(line[i])
		}
	}
	return append(cells, strings.TrimSpace(cell.String()))
}

// exampleEntry is a key that config/example.toml shows, with its value.
type exampleEntry struct {
	line  int
	value string
}

var (
	exampleTableRe  = regexp.MustCompile(`^\[([a-z_.]+)\]\s*$`)
	exampleTablesRe = regexp.MustCompile(`^#\s*\[\[([a-z_.]+)\]\]\s*$`)
	exampleKeyRe    = regexp.MustCompile(`^#\s+([a-z_]+) = (.*?)(\s+# .*)?$`)
)

// parseExample reads the keys example.toml shows in comments, by dotted
// path; an array of tables shown as "# [[policy.rule]]" counts as a key.
func parseExample(example []byte) (map[string]exampleEntry, []string) {
	entries := map[string]exampleEntry{}
	var problems []string
	section := ""
	add := func(path, value string, n int) {
		if prev, dup := entries[path]; dup {
			problems = append(problems, fmt.Sprintf("config/example.toml:%d: %q is shown twice (first on line %d)", n, path, prev.line))
			return
		}
		entries[path] = exampleEntry{line: n, value: value}
	}
	sc := bufio.NewScanner(bytes.NewReader(example))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if m := exampleTableRe.FindStringSubmatch(line); m != nil {
			section = m[1]
			continue
		}
		if m := exampleTablesRe.FindStringSubmatch(line); m != nil {
			section = m[1]
			add(section, "", n)
			continue
		}
		if m := exampleKeyRe.FindStringSubmatch(line); m != nil {
			path := m[1]
			if section != "" {
				path = section + "." + m[1]
			}
			add(path, m[2], n)
		}
	}
	return entries, problems
}

// referenceType is how the README names the TOML type of a config field.
func referenceType(t reflect.Type) string {
	if t == reflect.TypeFor[Duration]() {
		return "duration"
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int64:
		return "integer"
	case reflect.Slice:
		switch t.Elem().Kind() {
		case reflect.String:
			return "list of strings"
		case reflect.Struct:
			return "array of tables"
		}
	}
	return "unknown Go type " + t.String()
}

// decodeLiteral decodes a TOML value written for a field of type t.
func decodeLiteral(t reflect.Type, literal string) (reflect.Value, error) {
	holder := reflect.New(reflect.StructOf([]reflect.StructField{{Name: "V", Type: t, Tag: `toml:"v"`}}))
	if _, err := toml.Decode("v = "+literal, holder.Interface()); err != nil {
		return reflect.Value{}, err
	}
	return holder.Elem().Field(0), nil
}

// tomlLiteral writes a config value as TOML, for messages.
func tomlLiteral(v reflect.Value) string {
	holder := reflect.New(reflect.StructOf([]reflect.StructField{{Name: "V", Type: v.Type(), Tag: `toml:"v"`}})).Elem()
	holder.Field(0).Set(v)
	out, err := toml.Marshal(holder.Interface())
	if err != nil || !bytes.HasPrefix(out, []byte("v = ")) {
		return fmt.Sprintf("%#v", v.Interface())
	}
	return strings.TrimSpace(strings.TrimPrefix(string(out), "v = "))
}

// sameValue compares config values; an empty list equals an unset one.
func sameValue(a, b reflect.Value) bool {
	if a.Kind() == reflect.Slice && a.Len() == 0 && b.Len() == 0 {
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

// checkReference returns every disagreement between the README's config
// reference, the config structs with their defaults, and example.toml.
func checkReference(readme, example []byte) []string {
	rows, problems, err := parseReference(readme)
	if err != nil {
		return []string{err.Error()}
	}
	shown, exampleProblems := parseExample(example)
	problems = append(problems, exampleProblems...)

	keys := map[string]configKey{}
	for _, k := range configKeys(reflect.TypeFor[Config]()) {
		keys[k.path] = k
	}
	paths := map[string]bool{}
	for p := range keys {
		paths[p] = true
	}
	for p := range rows {
		paths[p] = true
	}
	for p := range shown {
		paths[p] = true
	}
	sorted := make([]string, 0, len(paths))
	for p := range paths {
		sorted = append(sorted, p)
	}
	sort.Strings(sorted)

	defaults := reflect.ValueOf(Default()).Elem()
	for _, path := range sorted {
		k, inStructs := keys[path]
		r, inReadme := rows[path]
		e, inExample := shown[path]
		if !inStructs || !inReadme || !inExample {
			var in, notIn []string
			for _, place := range []struct {
				ok         bool
				name, here string
			}{
				{inStructs, "the config structs", "the config structs"},
				{inReadme, "README.md", r.where},
				{inExample, "config/example.toml", fmt.Sprintf("config/example.toml:%d", e.line)},
			} {
				if place.ok {
					in = append(in, place.here)
				} else {
					notIn = append(notIn, place.name)
				}
			}
			problems = append(problems, fmt.Sprintf("config key %q is in %s but not in %s: document it in all three, or remove it",
				path, strings.Join(in, " and "), strings.Join(notIn, " and ")))
		}
		if !inStructs {
			continue
		}
		var def reflect.Value
		if k.index != nil && !k.tables {
			def = defaults.FieldByIndex(k.index)
		}
		if inReadme {
			if want := referenceType(k.field.Type); r.typ != want {
				problems = append(problems, fmt.Sprintf("%s: %q has type %q in the README, want %q", r.where, path, r.typ, want))
			}
			if r.meaning == "" {
				problems = append(problems, fmt.Sprintf("%s: %q has no meaning in the README", r.where, path))
			}
			switch {
			case !def.IsValid():
				if r.def != "unset" {
					problems = append(problems, fmt.Sprintf("%s: %q has default %s in the README, want unset: it has no default of its own", r.where, path, r.def))
				}
			default:
				m := backtickedRe.FindStringSubmatch(r.def)
				if m == nil {
					problems = append(problems, fmt.Sprintf("%s: the default of %q must be a TOML value in backticks, not %q", r.where, path, r.def))
					break
				}
				got, err := decodeLiteral(k.field.Type, m[1])
				if err != nil {
					problems = append(problems, fmt.Sprintf("%s: the default of %q, %s, does not decode: %v", r.where, path, m[1], err))
				} else if !sameValue(got, def) {
					problems = append(problems, fmt.Sprintf("%s: %q has default %s in the README, but Default() sets %s", r.where, path, m[1], tomlLiteral(def)))
				}
			}
		}
		if inExample && def.IsValid() {
			got, err := decodeLiteral(k.field.Type, e.value)
			if err != nil {
				problems = append(problems, fmt.Sprintf("config/example.toml:%d: the value of %q, %s, does not decode: %v", e.line, path, e.value, err))
			} else if !sameValue(got, def) {
				problems = append(problems, fmt.Sprintf("config/example.toml:%d: %q shows %s, but Default() sets %s; the example shows the defaults", e.line, path, e.value, tomlLiteral(def)))
			}
		}
	}
	return problems
}
