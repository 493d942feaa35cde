package localjob

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// nodeKind is the shape of a YAML value.
type nodeKind int

const (
	nullNode nodeKind = iota
	scalarNode
	mapNode
	seqNode
)

// node is a YAML value of .gitlab-ci.yml with anchors, aliases and merge
// keys already applied, and the line it starts on for messages. A sequence
// tagged !reference keeps its tag until the references are resolved.
type node struct {
	kind   nodeKind
	line   int
	tag    string // "!reference", or a scalar's resolved tag such as "!!str"
	text   string // a scalar's text
	fields []field
	items  []*node
}

// field is one key of a mapping.
type field struct {
	key  string
	line int
	val  *node
}

// get returns the value of key in a mapping, or nil.
func (n *node) get(key string) *node {
	if n == nil || n.kind != mapNode {
		return nil
	}
	for _, f := range n.fields {
		if f.key == key {
			return f.val
		}
	}
	return nil
}

// has reports whether a mapping has key, even with a null value.
func (n *node) has(key string) bool {
	if n == nil || n.kind != mapNode {
		return false
	}
	for _, f := range n.fields {
		if f.key == key {
			return true
		}
	}
	return false
}

// keyLine is the line of key in a mapping, else the mapping's own.
func (n *node) keyLine(key string) int {
	for _, f := range n.fields {
		if f.key == key {
			return f.line
		}
	}
	return n.line
}

// set replaces or appends key in a mapping.
func (n *node) set(key string, line int, val *node) {
	for i, f := range n.fields {
		if f.key == key {
			n.fields[i].val = val
			return
		}
	}
	n.fields = append(n.fields, field{key: key, line: line, val: val})
}

// without returns a shallow copy of a mapping without key.
func (n *node) without(key string) *node {
	c := *n
	c.fields = nil
	for _, f := range n.fields {
		if f.key != key {
			c.fields = append(c.fields, f)
		}
	}
	return &c
}

// clone copies the tree, so merges never change the file's own values.
func (n *node) clone() *node {
	if n == nil {
		return nil
	}
	c := *n
	c.fields = make([]field, len(n.fields))
	for i, f := range n.fields {
		c.fields[i] = field{key: f.key, line: f.line, val: f.val.clone()}
	}
	c.items = make([]*node, len(n.items))
	for i, item := range n.items {
		c.items[i] = item.clone()
	}
	return &c
}

// describe names the node's kind for messages.
func (n *node) describe() string {
	switch {
	case n == nil || n.kind == nullNode:
		return "null"
	case n.kind == scalarNode:
		return fmt.Sprintf("%q", n.text)
	case n.kind == mapNode:
		return "a mapping"
	default:
		return "a list"
	}
}

// deepMerge merges over into base as GitLab's extends does: mappings merge
// key by key, recursively; any other value of over replaces base's.
func deepMerge(base, over *node) *node {
	if base == nil || base.kind != mapNode || over == nil || over.kind != mapNode {
		return over.clone()
	}
	out := base.clone()
	for _, f := range over.fields {
		if prev := out.get(f.key); prev != nil && prev.kind == mapNode && f.val != nil && f.val.kind == mapNode {
			out.set(f.key, f.line, deepMerge(prev, f.val))
			continue
		}
		out.set(f.key, f.line, f.val.clone())
	}
	return out
}

// maxAliasDepth bounds alias expansion, which a hostile file can make
// exponential.
const (
	maxAliasDepth = 64
	maxNodes      = 1 << 20
)

// parseYAML reads a .gitlab-ci.yml. A file of two documents whose first
// holds only `spec:` (the header of a CI/CD component) yields the second,
// and headerLine is the line of that header.
func parseYAML(name string, data []byte) (root *node, headerLine int, warnings []Note, err error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, 0, nil, fmt.Errorf("%s is not valid YAML: %s", name, yamlErrorLine(err))
		}
		docs = append(docs, &doc)
	}
	c := &converter{}
	switch len(docs) {
	case 0:
		return nil, 0, nil, fmt.Errorf("%s is empty: define at least one job with a script", name)
	case 1:
	case 2:
		header, err := c.convert(docs[0], 0)
		if err != nil {
			return nil, 0, nil, fmt.Errorf("%s: %w", name, err)
		}
		if header.kind != mapNode || len(header.fields) != 1 || header.fields[0].key != "spec" {
			return nil, 0, nil, fmt.Errorf("%s: line %d: a second YAML document is only allowed after a `spec:` header", name, docs[1].Line)
		}
		headerLine = header.line
		docs = docs[1:]
	default:
		return nil, 0, nil, fmt.Errorf("%s: line %d: more than two YAML documents; GitLab reads one (after an optional `spec:` header)", name, docs[2].Line)
	}
	root, err = c.convert(docs[0], 0)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("%s: %w", name, err)
	}
	if root.kind != mapNode {
		return nil, 0, nil, fmt.Errorf("%s: line %d: the file must be a mapping of keywords and jobs, not %s", name, root.line, root.describe())
	}
	return root, headerLine, c.warnings, nil
}

type converter struct {
	nodes    int
	warnings []Note
}

func (c *converter) convert(y *yaml.Node, depth int) (*node, error) {
	c.nodes++
	if c.nodes > maxNodes {
		return nil, fmt.Errorf("line %d: the file expands to more than %d values (aliases nested too deep?)", y.Line, maxNodes)
	}
	switch y.Kind {
	case yaml.DocumentNode:
		if len(y.Content) == 0 {
			return &node{kind: nullNode, line: y.Line}, nil
		}
		return c.convert(y.Content[0], depth)
	case yaml.AliasNode:
		if depth >= maxAliasDepth {
			return nil, fmt.Errorf("line %d: aliases nested more than %d deep", y.Line, maxAliasDepth)
		}
		return c.convert(y.Alias, depth+1)
	case yaml.ScalarNode:
		if err := checkTag(y); err != nil {
			return nil, err
		}
		if y.ShortTag() == "!!null" {
			return &node{kind: nullNode, line: y.Line}, nil
		}
		return &node{kind: scalarNode, line: y.Line, tag: y.ShortTag(), text: y.Value}, nil
	case yaml.SequenceNode:
		n := &node{kind: seqNode, line: y.Line}
		switch y.Tag {
		case "!reference":
			n.tag = "!reference"
		default:
			if err := checkTag(y); err != nil {
				return nil, err
			}
		}
		for _, item := range y.Content {
			v, err := c.convert(item, depth)
			if err != nil {
				return nil, err
			}
			n.items = append(n.items, v)
		}
		return n, nil
	case yaml.MappingNode:
		if err := checkTag(y); err != nil {
			return nil, err
		}
		return c.mapping(y, depth)
	}
	return nil, fmt.Errorf("line %d: unsupported YAML node", y.Line)
}

// mapping converts a mapping, applying merge keys (<<) the way YAML 1.1
// does: the mapping's own keys win, then the merged mappings in order.
func (c *converter) mapping(y *yaml.Node, depth int) (*node, error) {
	n := &node{kind: mapNode, line: y.Line}
	var merged []*node
	seen := map[string]int{}
	for i := 0; i+1 < len(y.Content); i += 2 {
		k, v := y.Content[i], y.Content[i+1]
		if k.Kind == yaml.AliasNode {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: a key must be a plain string, not a list or mapping", k.Line)
		}
		if k.ShortTag() == "!!merge" {
			val, err := c.convert(v, depth)
			if err != nil {
				return nil, err
			}
			switch val.kind {
			case mapNode:
				merged = append(merged, val)
			case seqNode:
				for _, item := range val.items {
					if item.kind != mapNode {
						return nil, fmt.Errorf("line %d: a merge key (<<) takes a mapping or a list of mappings", k.Line)
					}
					merged = append(merged, item)
				}
			default:
				return nil, fmt.Errorf("line %d: a merge key (<<) takes a mapping or a list of mappings", k.Line)
			}
			continue
		}
		val, err := c.convert(v, depth)
		if err != nil {
			return nil, err
		}
		if prev, dup := seen[k.Value]; dup {
			c.warnings = append(c.warnings, Note{Key: k.Value, Line: k.Line,
				Text: fmt.Sprintf("is defined twice in one mapping (first on line %d); exec used the last one, as GitLab does", prev)})
			n.set(k.Value, k.Line, val)
			continue
		}
		seen[k.Value] = k.Line
		n.fields = append(n.fields, field{key: k.Value, line: k.Line, val: val})
	}
	for _, m := range merged {
		for _, f := range m.fields {
			if !n.has(f.key) {
				n.fields = append(n.fields, f)
			}
		}
	}
	return n, nil
}

// checkTag refuses custom tags other than !reference, which GitLab refuses
// too.
func checkTag(y *yaml.Node) error {
	if y.Tag == "" || strings.HasPrefix(y.Tag, "!!") || strings.HasPrefix(y.Tag, "tag:yaml.org,2002:") || y.Tag == "!" {
		return nil
	}
	if y.Tag == "!reference" {
		return fmt.Errorf("line %d: !reference takes a list such as [.job, script]", y.Line)
	}
	return fmt.Errorf("line %d: unknown YAML tag %s; GitLab knows only !reference", y.Line, y.Tag)
}

// yamlParserProblems are the messages of yaml.v3's parser (not its
// scanner), whose error names the line 0-based: one too low.
var yamlParserProblems = []string{
	"did not find expected <stream-start>", "did not find expected <document start>",
	"did not find expected node content", "did not find expected '-' indicator", "did not find expected key",
	"did not find expected ',' or ']'", "did not find expected ',' or '}'", "found undefined tag handle",
	"found duplicate %YAML directive", "found incompatible YAML document", "found duplicate %TAG directive",
}

var yamlErrorRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`) })

// yamlErrorLine returns a yaml.v3 syntax error with the line it is about,
// 1-based, as an editor shows it.
func yamlErrorLine(err error) string {
	m := yamlErrorRe().FindStringSubmatch(err.Error())
	if m == nil {
		return err.Error()
	}
	line, msg := 0, m[2]
	if m[1] != "" {
		line, _ = strconv.Atoi(m[1])
	}
	for _, p := range yamlParserProblems {
		if strings.HasPrefix(msg, p) {
			line++
			break
		}
	}
	return fmt.Sprintf("line %d: %s", max(line, 1), msg)
}
