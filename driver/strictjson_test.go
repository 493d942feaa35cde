package driver

import (
	"strings"
	"testing"
)

func TestDecodeStrict(t *testing.T) {
	type doc struct {
		Name  string            `json:"name"`
		Alias string            `json:"alias"`
		Vars  map[string]string `json:"variables"`
		List  []any             `json:"list"`
	}
	tests := map[string]struct {
		data     string
		maxDepth int
		wantErr  string // "" means success
	}{
		"valid":                       {data: `{"name":"a","variables":{"A":"1"},"list":[1,{"x":2}]}`, maxDepth: 4},
		"same key in sibling objects": {data: `{"list":[{"k":1},{"k":2}],"name":"a"}`, maxDepth: 4},
		"same key at two levels":      {data: `{"name":"a","variables":{"name":"b"}}`, maxDepth: 4},
		"unknown keys allowed":        {data: `{"name":"a","extra":{"deep":true}}`, maxDepth: 4},
		"duplicate key":               {data: `{"name":"a","name":"b"}`, maxDepth: 4, wantErr: `duplicate key "name"`},
		"duplicate after nesting":     {data: `{"name":"a","list":[{"x":1}],"name":"b"}`, maxDepth: 4, wantErr: `duplicate key "name"`},
		"duplicate nested":            {data: `{"variables":{"A":"1","A":"2"}}`, maxDepth: 4, wantErr: `duplicate key "A"`},
		"duplicate in array item":     {data: `{"list":[{"x":1,"x":2}]}`, maxDepth: 4, wantErr: `duplicate key "x"`},
		"case variant":                {data: `{"name":"a","NAME":"b"}`, maxDepth: 4, wantErr: "differ only in case"},
		"unicode fold variant":        {data: "{\"alias\":\"a\",\"alia\u017f\":\"b\"}", maxDepth: 4, wantErr: "differ only in case"},
		"kelvin sign variant":         {data: "{\"list\":[],\"\u212aey\":1,\"key\":2}", maxDepth: 4, wantErr: "differ only in case"},
		"depth at limit":              {data: `[[[[]]]]`, maxDepth: 4},
		"too deep":                    {data: `[[[[[]]]]]`, maxDepth: 4, wantErr: "nested deeper than 4 levels"},
		"too deep objects":            {data: `{"a":{"b":{"c":{"d":{}}}}}`, maxDepth: 4, wantErr: "nested deeper than 4 levels"},
		"trailing value":              {data: `{"name":"a"} {"name":"b"}`, maxDepth: 4, wantErr: "unexpected data after the JSON value"},
		"trailing garbage":            {data: `{"name":"a"} x`, maxDepth: 4, wantErr: "invalid character"},
		"truncated":                   {data: `{"name":`, maxDepth: 4, wantErr: "EOF"},
		"wrong type":                  {data: `{"name":1}`, maxDepth: 4, wantErr: "cannot unmarshal number"},
		"empty input":                 {data: ``, maxDepth: 4, wantErr: "EOF"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var v any
			if strings.HasPrefix(tc.data, "{") {
				v = &doc{}
			} else {
				v = &[]any{}
			}
			err := decodeStrict([]byte(tc.data), tc.maxDepth, v)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.wantErr != "" && err == nil:
				t.Errorf("got no error, want one containing %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("got %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestCheckKeysDoesNotDecode(t *testing.T) {
	// checkKeys only looks at structure, so scalars of any type pass.
	if err := checkKeys([]byte(`{"a":1,"b":"x","c":null,"d":true,"e":1.5e3}`), 2); err != nil {
		t.Errorf("got %v, want no error", err)
	}
	if err := checkKeys([]byte(`{"a":1,"A":2}`), 2); err == nil {
		t.Error("got no error, want a case-variant error")
	}
}
