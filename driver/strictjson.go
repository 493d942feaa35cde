package driver

import "github.com/berthci/berth/internal/strictjson"

// decodeStrict decodes untrusted JSON into v after checking what
// encoding/json lets through silently: duplicate keys and keys that differ
// only in case, and nesting deeper than maxDepth. Trailing data is an error
// too. See [strictjson.Decode].
func decodeStrict(data []byte, maxDepth int, v any) error {
	return strictjson.Decode(data, maxDepth, v)
}

func checkKeys(data []byte, maxDepth int) error { return strictjson.CheckKeys(data, maxDepth) }
