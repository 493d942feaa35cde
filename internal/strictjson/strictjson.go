// Package strictjson decodes untrusted JSON after checking for what
// encoding/json lets through silently: duplicate keys, keys that differ only
// in case, and deep nesting. The driver and the guarding socket proxy share it.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
)

// Decode decodes untrusted JSON into v after [CheckKeys]. Trailing data is
// an error too.
func Decode(data []byte, maxDepth int, v any) error {
	if err := CheckKeys(data, maxDepth); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// CheckKeys returns an error when data is not JSON, repeats a key in one
// object, holds two keys of one object that differ only in case (Go matches
// them to the same field, last one winning), or nests deeper than maxDepth.
// It looks only at structure: scalars of any type pass.
func CheckKeys(data []byte, maxDepth int) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type frame struct {
		object bool
		keys   map[string]string
		expect bool // next token in an object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.expect {
			if key, ok := tok.(string); ok {
				folded := FoldKey(key)
				if prev, dup := top.keys[folded]; dup {
					if prev == key {
						return fmt.Errorf("duplicate key %q", key)
					}
					return fmt.Errorf("keys %q and %q differ only in case", prev, key)
				}
				top.keys[folded] = key
				top.expect = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) >= maxDepth {
				return fmt.Errorf("nested deeper than %d levels", maxDepth)
			}
			stack = append(stack, &frame{object: tok == json.Delim('{'), keys: map[string]string{}, expect: true})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].expect = true
		}
	}
}

// FoldKey maps a key to one representative of its case-folding class, the
// way encoding/json matches names to fields (as bytes.EqualFold does:
// "ſ" and "s", "K" (Kelvin) and "k" are the same).
func FoldKey(key string) string {
	var b strings.Builder
	for _, r := range key {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < least {
				least = f
			}
		}
		b.WriteRune(least)
	}
	return b.String()
}
