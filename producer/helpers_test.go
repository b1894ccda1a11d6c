package producer

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// samplesDir holds the project's real CloudTrail records.
var samplesDir = filepath.Join("..", "..", "shared", "samples")

// detected is the fixed clock of every test.
var detected = time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)

const detectedText = "2026-01-02T03:04:05.123456789Z"

// ctRecord is the part of a CloudTrail record that matcher.Event holds.
type ctRecord struct {
	EventID            string           `json:"eventID"`
	EventTime          string           `json:"eventTime"`
	EventName          string           `json:"eventName"`
	EventSource        string           `json:"eventSource"`
	AWSRegion          string           `json:"awsRegion"`
	RecipientAccountID string           `json:"recipientAccountId"`
	ErrorCode          string           `json:"errorCode"`
	ErrorMessage       string           `json:"errorMessage"`
	SourceIPAddress    string           `json:"sourceIPAddress"`
	UserAgent          string           `json:"userAgent"`
	UserIdentity       matcher.Identity `json:"userIdentity"`
	RequestParameters  json.RawMessage  `json:"requestParameters"`
}

// readSample returns a sample file's bytes.
func readSample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(samplesDir, name))
	if err != nil {
		t.Fatalf("reading sample: %v", err)
	}
	return b
}

// sampleEvent builds the matcher.Event of the CloudTrail record in a
// sample, as the matcher would: the first record of an S3 log file, the
// detail of an EventBridge envelope, else the value itself, with Original
// the record's bytes verbatim.
func sampleEvent(t testing.TB, name string) matcher.Event {
	t.Helper()
	raw := readSample(t, name)
	var env struct {
		Records []json.RawMessage `json:"Records"`
		Detail  json.RawMessage   `json:"detail"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	switch {
	case len(env.Records) > 0:
		raw = env.Records[0]
	case env.Detail != nil:
		raw = env.Detail
	}
	var r ctRecord
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var params struct {
		UserName   string `json:"userName"`
		RoleName   string `json:"roleName"`
		GroupName  string `json:"groupName"`
		PolicyARN  string `json:"policyArn"`
		PolicyName string `json:"policyName"`
	}
	if len(r.RequestParameters) > 0 && string(r.RequestParameters) != "null" {
		if err := json.Unmarshal(r.RequestParameters, &params); err != nil {
			t.Fatalf("%s: requestParameters: %v", name, err)
		}
	}
	// Elastic's pipeline: failure when errorCode or errorMessage is set.
	outcome := "success"
	if r.ErrorCode != "" || r.ErrorMessage != "" {
		outcome = "failure"
	}
	var kind, target string
	switch {
	case params.UserName != "":
		kind, target = matcher.TargetUser, params.UserName
	case params.RoleName != "":
		kind, target = matcher.TargetRole, params.RoleName
	case params.GroupName != "":
		kind, target = matcher.TargetGroup, params.GroupName
	}
	return matcher.Event{
		EventID:            r.EventID,
		EventTime:          r.EventTime,
		EventName:          r.EventName,
		EventSource:        r.EventSource,
		AWSRegion:          r.AWSRegion,
		RecipientAccountID: r.RecipientAccountID,
		ErrorCode:          r.ErrorCode,
		ErrorMessage:       r.ErrorMessage,
		SourceIPAddress:    r.SourceIPAddress,
		UserAgent:          r.UserAgent,
		UserIdentity:       r.UserIdentity,
		RequestParameters:  r.RequestParameters,
		Outcome:            outcome,
		TargetKind:         kind,
		TargetName:         target,
		PolicyARN:          params.PolicyARN,
		PolicyName:         params.PolicyName,
		Original:           bytes.Clone(raw),
	}
}

// sampleFinding is the quarantine rule's finding on a sample.
func sampleFinding(t testing.TB, name string, shape matcher.Shape) matcher.Finding {
	t.Helper()
	return matcher.Finding{Rule: matcher.ElasticQuarantineRule, Event: sampleEvent(t, name), Shape: shape}
}

var (
	schemaOnce sync.Once
	schema     *jsonschema.Schema
	schemaErr  error
)

// validate fails t unless doc is valid against the embedded schema, with
// formats (date-time, ipv4, ipv6, uri) asserted.
func validate(t testing.TB, doc []byte) {
	t.Helper()
	if err := validateErr(doc); err != nil {
		t.Fatalf("document does not validate: %v\n%s", err, doc)
	}
}

func validateErr(doc []byte) error {
	schemaOnce.Do(func() {
		s, err := jsonschema.UnmarshalJSON(bytes.NewReader(ECSSchema()))
		if err != nil {
			schemaErr = err
			return
		}
		c := jsonschema.NewCompiler()
		c.AssertFormat()
		if schemaErr = c.AddResource(ECSSchemaID, s); schemaErr != nil {
			return
		}
		schema, schemaErr = c.Compile(ECSSchemaID)
	})
	if schemaErr != nil {
		return schemaErr
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return err
	}
	return schema.Validate(inst)
}

// decode unmarshals a document into a generic tree.
func decode(t testing.TB, doc []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatalf("document is not JSON: %v\n%s", err, doc)
	}
	return m
}

// lookup returns the value at a dotted path ("event.kind").
func lookup(m map[string]any, path string) (any, bool) {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = obj[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// leaves returns the dotted paths of every non-object value in m.
func leaves(m map[string]any) []string {
	var out []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		obj, ok := v.(map[string]any)
		if !ok {
			out = append(out, prefix)
			return
		}
		for k, c := range obj {
			if prefix != "" {
				k = prefix + "." + k
			}
			walk(k, c)
		}
	}
	walk("", m)
	sort.Strings(out)
	return out
}

// jsonText is v as compact JSON, to compare decoded values with expected
// Go values without caring whether a number is int or float64.
func jsonText(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
