package strictjson

import (
	"strings"
	"testing"
)

func TestCheckKeys(t *testing.T) {
	tests := map[string]struct {
		data     string
		maxDepth int
		wantErr  string
	}{
		"valid":          {data: `{"a":{"a":1},"b":[{"a":1},{"a":2}]}`, maxDepth: 3},
		"duplicate":      {data: `{"HostConfig":{"Privileged":false,"Privileged":true}}`, maxDepth: 3, wantErr: `duplicate key "Privileged"`},
		"case variant":   {data: `{"HostConfig":{"Privileged":false,"privileged":true}}`, maxDepth: 3, wantErr: "differ only in case"},
		"long s variant": {data: "{\"Sysctls\":{},\"\u017fysctls\":{\"a\":\"b\"}}", maxDepth: 3, wantErr: "differ only in case"},
		"too deep":       {data: `[[[]]]`, maxDepth: 2, wantErr: "nested deeper than 2 levels"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := CheckKeys([]byte(tc.data), tc.maxDepth)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
