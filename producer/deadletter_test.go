package producer

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestDeadLetterPreservesBytes(t *testing.T) {
	// A gzip stream cut short, as a truncated CloudWatch Logs payload is.
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(readSample(t, quarantineV2))
	w.Close()
	truncated := gz.Bytes()[:gz.Len()/2]

	tests := []struct {
		name       string
		value, key []byte
	}{
		{"valid JSON", readSample(t, quarantineV2), []byte("k")},
		{"invalid UTF-8", []byte("{\"eventName\":\"\xff\xfe\xc3\x28\"}"), []byte("\xff\xfe")},
		{"NUL bytes", []byte("\x00{\"a\":\x00}\x00"), []byte("a\x00b")},
		{"truncated gzip", truncated, nil},
		{"empty value, empty key", []byte{}, []byte{}},
		{"null value, null key", nil, nil},
		{"every byte value", allBytes(), allBytes()},
	}
	src := Source{Topic: "cloudtrail", Partition: 2, Offset: 41}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			value, key := bytes.Clone(tt.value), bytes.Clone(tt.key)
			r := DeadLetter(value, key, src, errors.New("x"), "cloudtrail-dlq", DefaultMaxMessageBytes)
			if r.Topic != "cloudtrail-dlq" {
				t.Errorf("topic = %q", r.Topic)
			}
			if !bytes.Equal(r.Value, tt.value) || (r.Value == nil) != (tt.value == nil) {
				t.Errorf("value = %q (nil %v), want %q (nil %v)", r.Value, r.Value == nil, tt.value, tt.value == nil)
			}
			if !bytes.Equal(r.Key, tt.key) || (r.Key == nil) != (tt.key == nil) {
				t.Errorf("key = %q (nil %v), want %q (nil %v)", r.Key, r.Key == nil, tt.key, tt.key == nil)
			}
			// The caller may reuse its buffers once the record is handed over.
			for i := range value {
				value[i] = 'X'
			}
			for i := range key {
				key[i] = 'X'
			}
			if !bytes.Equal(r.Value, tt.value) || !bytes.Equal(r.Key, tt.key) {
				t.Error("record aliases the caller's buffers")
			}
		})
	}
}

func TestDeadLetterHeaders(t *testing.T) {
	cause := fmt.Errorf("consumer: decoding record: %w", classed{class: "malformed_json"})
	r := DeadLetter([]byte("{"), nil, Source{Topic: "cloudtrail", Partition: 2147483647, Offset: 9007199254740993}, cause, "dlq", DefaultMaxMessageBytes)
	want := []string{
		"error=consumer: decoding record: classed malformed_json",
		"error-class=malformed_json",
		"source-topic=cloudtrail",
		"source-partition=2147483647",
		"source-offset=9007199254740993",
	}
	if len(r.Headers) != len(want) {
		t.Fatalf("headers = %s", headerText(r.Headers))
	}
	for i, h := range r.Headers {
		if got := h.Key + "=" + string(h.Value); got != want[i] {
			t.Errorf("header %d = %q, want %q", i, got, want[i])
		}
	}

	long := errors.New(strings.Repeat("é", 2000))
	r = DeadLetter(nil, nil, Source{}, long, "dlq", DefaultMaxMessageBytes)
	if got := headerMap(r.Headers)["error"]; len(got) != maxErrorHeader || !strings.HasPrefix(long.Error(), got) {
		t.Errorf("long error header has %d bytes, want the first %d", len(got), maxErrorHeader)
	}

	r = DeadLetter(nil, nil, Source{}, nil, "dlq", DefaultMaxMessageBytes)
	if h := headerMap(r.Headers); h["error"] != "unknown" || h["error-class"] != "unknown" {
		t.Errorf("nil cause: headers = %v", h)
	}
}

func TestClassify(t *testing.T) {
	var syntax error = json.Unmarshal([]byte("{"), new(any))
	var typ error = json.Unmarshal([]byte(`"x"`), new(int))
	_, b64 := base64.StdEncoding.DecodeString("!!!")
	_, gzHeader := gzip.NewReader(strings.NewReader("not gzip at all"))
	var gzCorrupt error
	{
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write([]byte("hello hello hello"))
		w.Close()
		b := buf.Bytes()
		b[len(b)-5] ^= 0xff // the CRC-32
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		_, gzCorrupt = io.ReadAll(zr)
	}

	tests := []struct {
		name  string
		cause error
		want  string
	}{
		{"matcher class", classed{class: "too_large"}, ClassTooLarge},
		{"matcher class, wrapped", fmt.Errorf("consumer: %w", classed{class: "bad_encoding"}), ClassBadEncoding},
		{"matcher class beats stdlib cause", classed{class: "unknown_shape", cause: syntax}, ClassUnknownShape},
		{"every fixed class passes", classed{class: "unknown_shape"}, ClassUnknownShape},
		{"compression class", classed{class: "bad_compression"}, ClassBadCompression},
		{"class outside the set", classed{class: "Bogus Class"}, ClassUnknown},
		{"json syntax", fmt.Errorf("decoding: %w", syntax), ClassMalformedJSON},
		{"json type", typ, ClassMalformedJSON},
		{"base64", b64, ClassBadEncoding},
		{"gzip header", gzHeader, ClassBadCompression},
		{"gzip checksum", gzCorrupt, ClassBadCompression},
		{"joined", errors.Join(errors.New("a"), classed{class: "malformed_json"}), ClassMalformedJSON},
		{"plain", errors.New("boom"), ClassUnknown},
		{"nil", nil, ClassUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name != "nil" && tt.cause == nil {
				t.Fatal("the operation meant to make this cause did not fail")
			}
			if got := Classify(tt.cause); got != tt.want {
				t.Errorf("Classify(%v) = %q, want %q", tt.cause, got, tt.want)
			}
			if r := DeadLetter(nil, nil, Source{}, tt.cause, "dlq", DefaultMaxMessageBytes); headerMap(r.Headers)["error-class"] != tt.want {
				t.Errorf("error-class header = %q, want %q", headerMap(r.Headers)["error-class"], tt.want)
			}
		})
	}
}

// classed is an error that names its class, as the matcher's input errors
// do, optionally wrapping a cause.
type classed struct {
	class string
	cause error
}

func (c classed) Error() string { return "classed " + c.class }
func (c classed) Class() string { return c.class }
func (c classed) Unwrap() error { return c.cause }

func allBytes() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}
