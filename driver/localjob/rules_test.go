package localjob

import (
	"strings"
	"testing"
)

func TestEvalExpression(t *testing.T) {
	vars := map[string]string{
		"CI_PIPELINE_SOURCE": "push",
		"CI_COMMIT_BRANCH":   "feature/login",
		"CI_DEFAULT_BRANCH":  "main",
		"EMPTY":              "",
		"PATTERN":            "/^feature\\//",
	}
	get := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	tests := map[string]bool{
		`$CI_PIPELINE_SOURCE == "push"`:                     true,
		`$CI_PIPELINE_SOURCE == 'merge_request_event'`:      false,
		`$CI_COMMIT_BRANCH`:                                 true,
		`$CI_COMMIT_TAG`:                                    false,
		`$EMPTY`:                                            false,
		`$EMPTY == ""`:                                      true,
		`$CI_COMMIT_TAG == null`:                            true,
		`$EMPTY == null`:                                    false,
		`$CI_COMMIT_BRANCH != $CI_DEFAULT_BRANCH`:           true,
		`${CI_COMMIT_BRANCH} =~ /^feature\//`:               true,
		`$CI_COMMIT_BRANCH =~ /^FEATURE/i`:                  true,
		`$CI_COMMIT_BRANCH =~ /^FEATURE/`:                   false,
		`$CI_COMMIT_BRANCH !~ /^release/`:                   true,
		`$CI_COMMIT_TAG =~ /.*/`:                            false,
		`$CI_COMMIT_BRANCH =~ $PATTERN`:                     true,
		`$CI_PIPELINE_SOURCE == "push" && $CI_COMMIT_TAG`:   false,
		`$CI_PIPELINE_SOURCE == "web" || $CI_COMMIT_BRANCH`: true,
		`($CI_PIPELINE_SOURCE == "web" || $CI_COMMIT_BRANCH) && $EMPTY == ""`:    true,
		`$CI_PIPELINE_SOURCE == "web" || $CI_COMMIT_BRANCH && $CI_COMMIT_TAG`:    false,
		`$CI_PIPELINE_SOURCE == "push" || $CI_COMMIT_BRANCH && $CI_COMMIT_TAG`:   true,
		`$CI_COMMIT_BRANCH =~ /login$/ && ($CI_DEFAULT_BRANCH == "main")`:        true,
		`$CI_PIPELINE_SOURCE=="push"&&$CI_COMMIT_BRANCH!="main"`:                 true,
		`$CI_COMMIT_BRANCH == "feature/login" && $CI_PIPELINE_SOURCE !~ /sched/`: true,
	}
	for expr, want := range tests {
		got, err := evalExpression(expr, get)
		if err != nil || got != want {
			t.Errorf("%s: got %v, %v; want %v", expr, got, err, want)
		}
	}
	for expr, want := range map[string]string{
		`$A ==`:          "ends too early",
		`($A == "x"`:     "missing )",
		`"unterminated`:  "unterminated string",
		`$A =~ "x"`:      "must be a regular expression",
		`/re/`:           "needs =~",
		`$A == "x" junk`: "unexpected",
		`$A =~ /(/`:      "bad regular expression",
	} {
		if _, err := evalExpression(expr, get); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got error %v, want one with %q", expr, err, want)
		}
	}
}
