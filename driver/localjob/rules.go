package localjob

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/bmatcuk/doublestar/v4"
)

// ruleOutcome is what a rules: list decided.
type ruleOutcome struct {
	run          bool
	when         string
	why          string // why the job would not run
	variables    []Variable
	allowFailure bool
}

// rules evaluates a rules: (or workflow:rules:) list as GitLab does when it
// creates the pipeline: the first rule whose if:, changes: and exists: all
// match decides. changes: cannot be evaluated locally (there is no push to
// compare with) and counts as matching, with a note.
func (r *resolver) rules(v *node, get func(string) (string, bool), key string) (ruleOutcome, error) {
	if v == nil || v.kind == nullNode {
		return ruleOutcome{run: true, when: "on_success"}, nil
	}
	if v.kind != seqNode {
		return ruleOutcome{}, fmt.Errorf("%s: line %d: %s: must be a list of rules", r.p.Name, v.line, key)
	}
	for i, rule := range v.items {
		if rule.kind != mapNode {
			return ruleOutcome{}, fmt.Errorf("%s: line %d: %s: each rule must be a mapping", r.p.Name, rule.line, key)
		}
		match := true
		for _, f := range rule.fields {
			switch f.key {
			case "if":
				expr, err := scalarString(f.val)
				if err != nil {
					return ruleOutcome{}, fmt.Errorf("%s: line %d: %s:if: %v", r.p.Name, f.line, key, err)
				}
				ok, err := evalExpression(expr, get)
				if err != nil {
					return ruleOutcome{}, fmt.Errorf("%s: line %d: %s:if: %q: %v", r.p.Name, f.line, key, expr, err)
				}
				match = match && ok
			case "changes":
				r.note(key+":changes", f.line, "cannot be evaluated locally (there is no pushed change to compare with); exec counted it as matching")
			case "exists":
				ok, err := r.exists(f, get, key)
				if err != nil {
					return ruleOutcome{}, err
				}
				match = match && ok
			case "when", "allow_failure", "variables", "needs", "interruptible", "start_in", "auto_cancel":
			default:
				return ruleOutcome{}, fmt.Errorf("%s: line %d: %s: unknown key %q in a rule", r.p.Name, f.line, key, f.key)
			}
		}
		if !match {
			continue
		}
		out := ruleOutcome{run: true, when: "on_success"}
		if rule.has("when") {
			when, _ := scalarString(rule.get("when"))
			out.when = when
		}
		if out.when == "never" {
			return ruleOutcome{why: fmt.Sprintf("rule %d (line %d) matches and has when: never", i+1, rule.line)}, nil
		}
		vars, err := r.variables(rule.get("variables"), key+":variables")
		if err != nil {
			return ruleOutcome{}, err
		}
		out.variables = vars
		out.allowFailure, _ = boolValue(rule.get("allow_failure"))
		if rule.has("needs") {
			r.note(key+":needs", rule.keyLine("needs"), "exec does not run other jobs; the rule's needs: changes nothing")
		}
		return out, nil
	}
	return ruleOutcome{why: "no rule matches"}, nil
}

// exists evaluates rules:exists: against the work tree's tracked files.
func (r *resolver) exists(f field, get func(string) (string, bool), key string) (bool, error) {
	v := f.val
	if v != nil && v.kind == mapNode {
		if v.has("project") || v.has("ref") {
			r.note(key+":exists", f.line, "files of another project or ref cannot be checked locally; exec counted it as matching")
			return true, nil
		}
		v = v.get("paths")
	}
	globs, err := stringList(v)
	if err != nil {
		return false, fmt.Errorf("%s: line %d: %s:exists: %v", r.p.Name, f.line, key, err)
	}
	for _, g := range globs {
		g = strings.TrimPrefix(expandString(g, get), "/")
		for _, file := range r.ctx.Files {
			if ok, _ := doublestar.Match(g, file); ok {
				return true, nil
			}
		}
	}
	return false, nil
}

// evalExpression evaluates a rules:if: expression: $VAR, "strings",
// 'strings', null, /regexps/, ==, !=, =~, !~, &&, || and parentheses.
func evalExpression(expr string, get func(string) (string, bool)) (bool, error) {
	toks, err := lexExpression(expr)
	if err != nil {
		return false, err
	}
	p := &exprParser{toks: toks, get: get}
	v, err := p.or()
	if err != nil {
		return false, err
	}
	if p.pos < len(p.toks) {
		return false, fmt.Errorf("unexpected %q", p.toks[p.pos].text)
	}
	return v, nil
}

type tokKind int

const (
	tokVar tokKind = iota
	tokString
	tokNull
	tokRegexp
	tokOp
	tokOpen
	tokClose
)

type token struct {
	kind tokKind
	text string
	re   *regexp.Regexp
}

// varNameRe is compiled on first use: every berth stage process links this
// package, and exec alone needs it.
var varNameRe = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))`)
})

func lexExpression(s string) ([]token, error) {
	var toks []token
	operand := func() bool {
		return len(toks) == 0 || toks[len(toks)-1].kind == tokOp || toks[len(toks)-1].kind == tokOpen
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case c == '(':
			toks = append(toks, token{kind: tokOpen, text: "("})
			i++
		case c == ')':
			toks = append(toks, token{kind: tokClose, text: ")"})
			i++
		case strings.HasPrefix(s[i:], "&&"), strings.HasPrefix(s[i:], "||"), strings.HasPrefix(s[i:], "=="),
			strings.HasPrefix(s[i:], "!="), strings.HasPrefix(s[i:], "=~"), strings.HasPrefix(s[i:], "!~"):
			toks = append(toks, token{kind: tokOp, text: s[i : i+2]})
			i += 2
		case c == '$':
			m := varNameRe().FindStringSubmatch(s[i:])
			if m == nil {
				return nil, fmt.Errorf("a variable name must follow $ at %q", s[i:])
			}
			name := m[1] + m[2]
			toks = append(toks, token{kind: tokVar, text: name})
			i += len(m[0])
		case c == '"' || c == '\'':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unterminated string at %q", s[i:])
			}
			toks = append(toks, token{kind: tokString, text: s[i+1 : i+1+end]})
			i += end + 2
		case c == '/' && operand():
			re, n, err := lexRegexp(s[i:])
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{kind: tokRegexp, text: s[i : i+n], re: re})
			i += n
		case strings.HasPrefix(s[i:], "null"):
			toks = append(toks, token{kind: tokNull, text: "null"})
			i += 4
		default:
			return nil, fmt.Errorf("unexpected %q", s[i:])
		}
	}
	return toks, nil
}

// lexRegexp reads /pattern/flags at the start of s and returns the
// compiled regexp and the length read.
func lexRegexp(s string) (*regexp.Regexp, int, error) {
	for j := 1; j < len(s); j++ {
		if s[j] == '\\' {
			j++
			continue
		}
		if s[j] != '/' {
			continue
		}
		pattern := s[1:j]
		k := j + 1
		for k < len(s) && strings.IndexByte("imsx", s[k]) >= 0 {
			k++
		}
		re, err := compileRegexp(pattern, s[j+1:k])
		return re, k, err
	}
	return nil, 0, fmt.Errorf("unterminated regular expression at %q", s)
}

func compileRegexp(pattern, flags string) (*regexp.Regexp, error) {
	prefix := ""
	if strings.Contains(flags, "i") {
		prefix += "i"
	}
	if strings.Contains(flags, "m") {
		// Ruby's /m lets . match newlines.
		prefix += "s"
	}
	if prefix != "" {
		pattern = "(?" + prefix + ")" + pattern
	}
	re, err := regexp.Compile(strings.ReplaceAll(pattern, `\/`, "/"))
	if err != nil {
		return nil, fmt.Errorf("bad regular expression /%s/: %v", pattern, err)
	}
	return re, nil
}

type exprParser struct {
	toks []token
	pos  int
	get  func(string) (string, bool)
}

func (p *exprParser) peek() *token {
	if p.pos < len(p.toks) {
		return &p.toks[p.pos]
	}
	return nil
}

func (p *exprParser) or() (bool, error) {
	v, err := p.and()
	if err != nil {
		return false, err
	}
	for t := p.peek(); t != nil && t.kind == tokOp && t.text == "||"; t = p.peek() {
		p.pos++
		w, err := p.and()
		if err != nil {
			return false, err
		}
		v = v || w
	}
	return v, nil
}

func (p *exprParser) and() (bool, error) {
	v, err := p.comparison()
	if err != nil {
		return false, err
	}
	for t := p.peek(); t != nil && t.kind == tokOp && t.text == "&&"; t = p.peek() {
		p.pos++
		w, err := p.comparison()
		if err != nil {
			return false, err
		}
		v = v && w
	}
	return v, nil
}

// value is an operand: a string, null (an undefined variable) or a
// regexp.
type value struct {
	null bool
	s    string
	re   *regexp.Regexp
}

func (p *exprParser) comparison() (bool, error) {
	t := p.peek()
	if t == nil {
		return false, errors.New("the expression ends too early")
	}
	if t.kind == tokOpen {
		p.pos++
		v, err := p.or()
		if err != nil {
			return false, err
		}
		if c := p.peek(); c == nil || c.kind != tokClose {
			return false, errors.New("missing )")
		}
		p.pos++
		return v, nil
	}
	left, err := p.operand()
	if err != nil {
		return false, err
	}
	op := p.peek()
	if op == nil || op.kind != tokOp || op.text == "&&" || op.text == "||" {
		if left.re != nil {
			return false, errors.New("a regular expression needs =~ or !~")
		}
		return !left.null && left.s != "", nil
	}
	p.pos++
	right, err := p.operand()
	if err != nil {
		return false, err
	}
	switch op.text {
	case "==", "!=":
		equal := left.null == right.null && (left.null || left.s == right.s)
		return equal == (op.text == "=="), nil
	default:
		re := right.re
		if re == nil && !right.null {
			// A variable may hold the pattern, written /.../flags.
			if strings.HasPrefix(right.s, "/") {
				var n int
				re, n, err = lexRegexp(right.s)
				if err != nil || n != len(right.s) {
					return false, fmt.Errorf("the right side of %s must be a regular expression, got %q", op.text, right.s)
				}
			} else {
				return false, fmt.Errorf("the right side of %s must be a regular expression, got %q", op.text, right.s)
			}
		}
		matched := re != nil && !left.null && re.MatchString(left.s)
		return matched == (op.text == "=~"), nil
	}
}

func (p *exprParser) operand() (value, error) {
	t := p.peek()
	if t == nil {
		return value{}, errors.New("the expression ends too early")
	}
	p.pos++
	switch t.kind {
	case tokVar:
		s, ok := p.get(t.text)
		return value{null: !ok, s: s}, nil
	case tokString:
		return value{s: t.text}, nil
	case tokNull:
		return value{null: true}, nil
	case tokRegexp:
		return value{re: t.re}, nil
	}
	return value{}, fmt.Errorf("unexpected %q", t.text)
}
