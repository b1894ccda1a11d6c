package matcher

import gojson "github.com/goccy/go-json"

type gojsonRaw = gojson.RawMessage

// unmarshalArray decodes a JSON array without decoding its elements.
func unmarshalArray(raw []byte, dst *[]gojsonRaw) error {
	raw = trimSpace(raw)
	if len(raw) == 0 || raw[0] != '[' {
		return errNotArray
	}
	return gojson.Unmarshal(raw, dst)
}

var errNotArray = inputError(ErrUnknownShape, -1, -1, "not an array")
