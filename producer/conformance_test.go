package producer

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/gzip"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// schemasDir holds the official ECS, AWS integration and OCSF definitions
// (see its SOURCES.md): the truth the alert documents are checked against,
// independent of the project's own JSON Schemas.
var schemasDir = filepath.Join("..", "..", "shared", "schemas")

// TestAlertsConformToOfficialSchemas encodes every rule's findings, in
// every input shape, in both formats, and checks each document leaf by leaf
// against the official definitions: 0 violations.
func TestAlertsConformToOfficialSchemas(t *testing.T) {
	ecsc, ocsfc := loadECSChecker(t), loadOCSFChecker(t)
	findings := alertCorpus(t)

	type cell struct{ rule, shape string }
	coverage := map[cell]int{}
	var violations []string
	docs := 0
	for i, f := range findings {
		src := Source{Topic: "cloudtrail", Partition: int32(i % 12), Offset: int64(i)}
		coverage[cell{f.Rule.Key, f.Shape.String()}]++
		for _, enc := range []Encoder{ECS{}, OCSF{}} {
			doc, err := enc.Encode(f, src, detected)
			if err != nil {
				t.Fatalf("%s %s: %v", enc.Format(), f.Rule.Key, err)
			}
			docs++
			var vs []string
			if enc.Format() == FormatECS {
				vs = ecsc.check(doc)
			} else {
				vs = ocsfc.check(doc)
			}
			for _, v := range vs {
				violations = append(violations, fmt.Sprintf("%s, rule %s, shape %s: %s", enc.Format(), f.Rule.Key, f.Shape, v))
			}
		}
	}
	// Every rule in every shape the matcher recognises, or the test
	// proves less than it says.
	var missing []string
	for _, r := range append(slices.Clone(matcher.AllRules), matcher.PostQuarantineRules...) {
		for _, s := range []matcher.Shape{matcher.ShapeRecord, matcher.ShapeS3Object, matcher.ShapeEventBridge,
			matcher.ShapeCloudWatchLogs, matcher.ShapeAgentMessage, matcher.ShapeECS} {
			if s == matcher.ShapeECS && r.Watch != nil {
				continue // the watch reads CloudTrail records, not ECS documents (matcher/watch.go)
			}
			if coverage[cell{r.Key, s.String()}] == 0 {
				missing = append(missing, r.Key+"/"+s.String())
			}
		}
	}
	if len(missing) > 0 {
		t.Errorf("no finding for rule/shape %v", missing)
	}
	if len(violations) > 0 {
		slices.Sort(violations)
		violations = slices.Compact(violations)
		t.Errorf("%d distinct violations in %d documents; the first ones:\n%s", len(violations), docs,
			strings.Join(violations[:min(len(violations), 40)], "\n"))
	}
	cells := slices.Collect(maps.Keys(coverage))
	sort.Slice(cells, func(i, j int) bool {
		return cells[i].rule+cells[i].shape < cells[j].rule+cells[j].shape
	})
	var b strings.Builder
	for _, c := range cells {
		fmt.Fprintf(&b, " %s/%s=%d", c.rule, c.shape, coverage[c])
	}
	t.Logf("%d findings, %d documents (ECS %s and OCSF %s), %d violations; findings per rule/shape:%s",
		len(findings), docs, ECSVersion, OCSFVersion, len(violations), b.String())
}

// alertCorpus is the findings of every rule on: the samples as they are;
// records derived from samples 02 and 10 (one per call each rule reports)
// in every delivery shape; ECS documents derived from sample 08; and
// generated traffic in every shape cloudtrailgen makes.
func alertCorpus(t *testing.T) []matcher.Finding {
	t.Helper()
	m, err := matcher.New(matcher.Config{Rules: matcher.AllRules})
	if err != nil {
		t.Fatal(err)
	}
	// The post-quarantine rules' findings too: sample 02's user is watched
	// from before its quarantine, so that the records below derived from
	// it (a detach, a new key) fall in the window.
	watch := sample02Watch()
	watch.OpenedAt = watch.OpenedAt.Add(-time.Hour)
	wl, err := matcher.NewWatchlist([]matcher.WatchEntry{watch})
	if err != nil {
		t.Fatal(err)
	}
	m.SetWatchlist(wl)
	s := m.NewScanner()
	var out []matcher.Finding
	match := func(what string, value []byte) {
		res := s.Match(value, nil)
		if res.Err != nil {
			t.Fatalf("%s: %v", what, res.Err)
		}
		out = append(out, res.Findings...)
	}

	names, err := filepath.Glob(filepath.Join(samplesDir, "*.json"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no samples in %s: %v", samplesDir, err)
	}
	for _, name := range names {
		match(name, readSample(t, filepath.Base(name)))
	}

	q := string(compactJSON(t, readSample(t, quarantineV2)))
	edit := func(s string, replace ...string) []byte {
		for i := 0; i+1 < len(replace); i += 2 {
			if !strings.Contains(s, replace[i]) {
				t.Fatalf("%q not in the sample", replace[i])
			}
			s = strings.Replace(s, replace[i], replace[i+1], 1)
		}
		return []byte(s)
	}
	const user = `"userName":"test-user"`
	records := map[string][]byte{
		"AttachUserPolicy":        []byte(q),
		"AttachUserPolicy denied": edit(q, `"eventName":"AttachUserPolicy",`, `"eventName":"AttachUserPolicy","errorCode":"AccessDenied","errorMessage":"explicit deny in a service control policy",`),
		"DetachUserPolicy":        edit(q, "AttachUserPolicy", "DetachUserPolicy"),
		"DetachRolePolicy":        edit(q, "AttachUserPolicy", "DetachRolePolicy", user, `"roleName":"web-app"`),
		"DetachGroupPolicy":       edit(q, "AttachUserPolicy", "DetachGroupPolicy", user, `"groupName":"developers"`),
		"AttachRolePolicy":        edit(q, "AttachUserPolicy", "AttachRolePolicy", user, `"roleName":"web-app"`),
		"AttachGroupPolicy":       edit(q, "AttachUserPolicy", "AttachGroupPolicy", user, `"groupName":"developers"`),
		"PutUserPolicy":           compactJSON(t, readSample(t, "10_legacy_putuserpolicy_exposed_credential_quarantine_panther.json")),
		"CreateAccessKey":         edit(q, "AttachUserPolicy", "CreateAccessKey"),
		"the watched user's call": []byte(watchedUserCall),
	}
	for name, rec := range records {
		for shape, wrap := range shapeWrappers(t) {
			match(name+" as "+shape, wrap(rec))
		}
	}
	for name, doc := range ecsVariants(t) {
		match("ECS "+name, doc)
	}

	// Generated traffic: every shape, until each rule has findings in it.
	for shape := range cloudtrailgen.ShapeCloudWatchAWSLogs + 1 {
		if shape == cloudtrailgen.ShapeUnknown {
			continue
		}
		gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 1000 + int64(shape), QuarantineRate: 0.3, NearMissRate: 0.6,
			Shapes: map[cloudtrailgen.Shape]float64{shape: 1}})
		perRule := map[string]int{}
		enough := func() bool {
			for _, r := range matcher.AllRules {
				if perRule[r.Key] < 10 {
					return false
				}
			}
			return true
		}
		for i := 0; i < 5000 && !enough(); i++ {
			r := gen.Next()
			res := s.Match(r.Value, nil)
			if res.Err != nil {
				t.Fatalf("generated %v: %v", shape, res.Err)
			}
			for _, f := range res.Findings {
				perRule[f.Rule.Key]++
			}
			out = append(out, res.Findings...)
		}
	}
	return out
}

// shapeWrappers deliver one CloudTrail record in each shape a user sends.
func shapeWrappers(t *testing.T) map[string]func([]byte) []byte {
	quote := func(b []byte) string {
		s, err := json.Marshal(string(b))
		if err != nil {
			t.Fatal(err)
		}
		return string(s)
	}
	payload := func(rec []byte) []byte {
		return []byte(`{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"aws-cloudtrail-logs","logStream":"123456789012_CloudTrail_us-east-1","subscriptionFilters":["to-kafka"],` +
			`"logEvents":[{"id":"37532396104598212345678901234567890123456789012345678901","timestamp":1700611432000,"message":` + quote(rec) + `}]}`)
	}
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	b64 := func(b []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(b)) }
	return map[string]func([]byte) []byte{
		"record":    func(rec []byte) []byte { return rec },
		"s3_object": func(rec []byte) []byte { return []byte(`{"Records":[` + string(rec) + `]}`) },
		"eventbridge": func(rec []byte) []byte {
			return []byte(`{"version":"0","id":"6f2d0f8c-7e3a-4c5d-9a1b-2c3d4e5f6a7b","detail-type":"AWS API Call via CloudTrail","source":"aws.iam","account":"123456789012",` +
				`"time":"2023-11-21T23:23:52Z","region":"us-east-1","resources":[],"detail":` + string(rec) + `}`)
		},
		"cloudwatch_logs":        payload,
		"cloudwatch_logs_gzip":   func(rec []byte) []byte { return gz(payload(rec)) },
		"cloudwatch_logs_base64": func(rec []byte) []byte { return b64(gz(payload(rec))) },
		"cloudwatch_logs_awslogs": func(rec []byte) []byte {
			return []byte(`{"awslogs":{"data":"` + string(b64(gz(payload(rec)))) + `"}}`)
		},
		"agent_message": func(rec []byte) []byte {
			return []byte(`{"@timestamp":"2023-11-21T23:24:00.000Z","agent":{"type":"filebeat","version":"8.15.0"},"input":{"type":"aws-s3"},"message":` + quote(rec) + `}`)
		},
	}
}

// ecsVariants are sample 08 (Elastic's ECS document) changed into the call
// each rule reports, the way Elastic's pipeline would have written it.
func ecsVariants(t *testing.T) map[string][]byte {
	const v2 = "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"
	variants := []struct {
		name, action, outcome, key, target string
		errorCode                          string
	}{
		{"AttachUserPolicy", "AttachUserPolicy", "success", "userName", "pwncloud-backdoor-user", ""},
		{"AttachUserPolicy failed", "AttachUserPolicy", "failure", "userName", "pwncloud-backdoor-user", "AccessDenied"},
		{"DetachRolePolicy", "DetachRolePolicy", "success", "roleName", "web-app", ""},
		{"AttachGroupPolicy", "AttachGroupPolicy", "success", "groupName", "developers", ""},
	}
	out := map[string][]byte{}
	for _, v := range variants {
		var doc map[string]any
		if err := json.Unmarshal(readSample(t, "08_ecs_normalised_attach_user_policy_elastic_integrations_expected.json"), &doc); err != nil {
			t.Fatal(err)
		}
		event := doc["event"].(map[string]any)
		event["action"], event["outcome"] = v.action, v.outcome
		ct := doc["aws"].(map[string]any)["cloudtrail"].(map[string]any)
		ct["request_parameters"] = "{policyArn=" + v2 + ", " + v.key + "=" + v.target + "}"
		ct["flattened"] = map[string]any{"request_parameters": map[string]any{"policyArn": v2, v.key: v.target}}
		if v.errorCode != "" {
			ct["error_code"] = v.errorCode
		}
		user := doc["user"].(map[string]any)
		delete(user, "target")
		switch v.key {
		case "userName":
			user["target"] = map[string]any{"name": v.target}
		case "groupName":
			doc["group"] = map[string]any{"name": v.target}
		}
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		out[v.name] = b
	}
	return out
}

func compactJSON(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// decodeNumbers decodes a document keeping numbers as json.Number, so
// that an integer field can be told from a fractional one.
func decodeNumbers(doc []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

// ecsField is one field of the official definitions: ECS's ecs_flat.yml
// or the AWS integration's fields.
type ecsField struct {
	Type    string   `json:"type"`
	Array   bool     `json:"array"`
	Allowed []string `json:"allowed"`
	Pattern string   `json:"pattern"`
}

// ecsChecker checks an ECS document against ECS (the version it claims,
// else the newest here) and the AWS integration's CloudTrail fields.
type ecsChecker struct {
	ecs map[string]map[string]ecsField // by ECS version
	aws map[string]ecsField
}

func loadECSChecker(t *testing.T) *ecsChecker {
	t.Helper()
	c := &ecsChecker{ecs: map[string]map[string]ecsField{}}
	for _, name := range []string{"ecs_fields_8.11.0.json", "ecs_fields_9.4.0.json"} {
		var f struct {
			Version string              `json:"version"`
			Fields  map[string]ecsField `json:"fields"`
		}
		readJSONFile(t, filepath.Join(schemasDir, name), &f)
		if f.Version == "" || len(f.Fields) < 1000 {
			t.Fatalf("%s: version %q, %d fields: not the ECS definitions", name, f.Version, len(f.Fields))
		}
		c.ecs[f.Version] = f.Fields
	}
	var aws struct {
		Fields map[string]ecsField `json:"fields"`
	}
	readJSONFile(t, filepath.Join(schemasDir, "aws_cloudtrail_fields.json"), &aws)
	if _, ok := aws.Fields["aws.cloudtrail.request_parameters"]; !ok {
		t.Fatal("aws_cloudtrail_fields.json has no aws.cloudtrail.request_parameters")
	}
	c.aws = aws.Fields
	return c
}

func readJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the official schemas (CI has them at ../shared/schemas): %v", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// check returns the document's violations: each leaf must be an official
// ECS field of a compatible type and allowed value, an aws.cloudtrail.*
// field of the integration, or under quarantine_watch.*.
func (c *ecsChecker) check(doc []byte) []string {
	m, err := decodeNumbers(doc)
	if err != nil {
		return []string{"not a JSON object: " + err.Error()}
	}
	version, _ := m["ecs"].(map[string]any)["version"].(string)
	fields, ok := c.ecs[version]
	if !ok {
		fields = c.ecs["9.4.0"]
	}
	var vs []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		if obj, ok := v.(map[string]any); ok {
			def, known := c.field(fields, path)
			if known && (def.Type == "flattened" || def.Type == "object" || def.Type == "nested") {
				return // any keys below an object field
			}
			if len(obj) == 0 {
				vs = append(vs, path+": empty object")
			}
			for k, child := range obj {
				if path != "" {
					k = path + "." + k
				}
				walk(k, child)
			}
			return
		}
		if strings.HasPrefix(path, "quarantine_watch.") {
			return
		}
		def, ok := c.field(fields, path)
		if !ok {
			vs = append(vs, path+": not an ECS "+version+" field, an aws.cloudtrail.* field of the AWS integration, or under quarantine_watch.*")
			return
		}
		for _, p := range ecsValueProblems(def, v) {
			vs = append(vs, path+": "+p)
		}
	}
	walk("", m)
	return vs
}

// field looks path up in ECS, then, for aws.cloudtrail.*, in the AWS
// integration's own fields.
func (c *ecsChecker) field(fields map[string]ecsField, path string) (ecsField, bool) {
	if def, ok := fields[path]; ok {
		return def, true
	}
	if strings.HasPrefix(path, "aws.cloudtrail.") {
		if def, ok := c.aws[path]; ok && def.Type != "ecs" {
			return def, true
		}
	}
	return ecsField{}, false
}

// ecsValueProblems says how v does not fit the field: an array where ECS
// normalises to one (and only there), a JSON type Elasticsearch would not
// index as the field's type without coercion, a value outside the allowed
// ones, or one the field's pattern rejects.
func ecsValueProblems(def ecsField, v any) []string {
	var ps []string
	values := []any{v}
	if arr, ok := v.([]any); ok {
		if !def.Array {
			ps = append(ps, "an array, but ECS does not normalise the field to one")
		}
		if len(arr) == 0 {
			ps = append(ps, "an empty array")
		}
		values = arr
	} else if def.Array {
		ps = append(ps, "not an array, but ECS normalises the field to one")
	}
	for _, x := range values {
		if p := ecsScalarProblem(def.Type, x); p != "" {
			ps = append(ps, p)
			continue
		}
		if s, ok := x.(string); ok {
			if len(def.Allowed) > 0 && !slices.Contains(def.Allowed, s) {
				ps = append(ps, fmt.Sprintf("%q is not an allowed value %v", s, def.Allowed))
			}
			if def.Pattern != "" && !compiled(def.Pattern).MatchString(s) {
				ps = append(ps, fmt.Sprintf("%q does not match %s", s, def.Pattern))
			}
		}
	}
	return ps
}

// compiled caches the definitions' patterns: the corpus checks thousands
// of values against a few dozen of them.
var compiled = func() func(string) *regexp.Regexp {
	var mu sync.Mutex
	cache := map[string]*regexp.Regexp{}
	return func(pattern string) *regexp.Regexp {
		mu.Lock()
		defer mu.Unlock()
		re, ok := cache[pattern]
		if !ok {
			re = regexp.MustCompile(pattern)
			cache[pattern] = re
		}
		return re
	}
}()

func ecsScalarProblem(typ string, x any) string {
	str, isStr := x.(string)
	num, isNum := x.(json.Number)
	switch typ {
	case "keyword", "constant_keyword", "wildcard", "match_only_text", "text":
		if !isStr {
			return fmt.Sprintf("%T where %s wants a string", x, typ)
		}
	case "long", "integer", "short", "byte", "unsigned_long":
		if _, err := strconv.ParseInt(string(num), 10, 64); !isNum || err != nil {
			return fmt.Sprintf("%v is not an integer (%s)", x, typ)
		}
	case "float", "double", "half_float", "scaled_float":
		if _, err := num.Float64(); !isNum || err != nil {
			return fmt.Sprintf("%v is not a number (%s)", x, typ)
		}
	case "date":
		if _, err := time.Parse(time.RFC3339Nano, str); !isStr || err != nil {
			if _, err := strconv.ParseInt(string(num), 10, 64); !isNum || err != nil {
				return fmt.Sprintf("%v is not an RFC 3339 date or epoch milliseconds", x)
			}
		}
	case "ip":
		if ip, err := netip.ParseAddr(str); !isStr || err != nil || ip.Zone() != "" {
			return fmt.Sprintf("%v is not an IP address", x)
		}
	case "boolean":
		if _, ok := x.(bool); !ok {
			return fmt.Sprintf("%v is not a boolean", x)
		}
	default:
		return "field type " + typ + " is not one this check knows: extend it"
	}
	return ""
}

// ocsfAttr is an attribute of the OCSF class or of one of its objects.
type ocsfAttr struct {
	Req        string            `json:"req"`
	Type       string            `json:"type"`
	Array      bool              `json:"array"`
	Profile    string            `json:"profile"`
	Deprecated bool              `json:"deprecated"`
	Enum       map[string]string `json:"enum"`
	Sibling    string            `json:"sibling"`
}

type ocsfConstraints struct {
	AtLeastOne []string `json:"at_least_one"`
	JustOne    []string `json:"just_one"`
}

type ocsfObject struct {
	Attributes  map[string]ocsfAttr `json:"attributes"`
	Constraints ocsfConstraints     `json:"constraints"`
}

type ocsfType struct {
	Type   string  `json:"type"`
	Regex  string  `json:"regex"`
	MaxLen int     `json:"max_len"`
	Range  []int64 `json:"range"`
}

// ocsfChecker checks a document against the OCSF 1.3.0 Detection Finding.
type ocsfChecker struct {
	class    ocsfObject
	objects  map[string]ocsfObject
	types    map[string]ocsfType
	profiles []string
	version  string
}

func loadOCSFChecker(t *testing.T) *ocsfChecker {
	t.Helper()
	var s struct {
		Class struct {
			ocsfObject
			UID int `json:"uid"`
		} `json:"class"`
		Objects  map[string]ocsfObject `json:"objects"`
		Types    map[string]ocsfType   `json:"types"`
		Profiles []string              `json:"profiles"`
		Version  string                `json:"version"`
	}
	readJSONFile(t, filepath.Join(schemasDir, "ocsf_1.3.0_detection_finding.json"), &s)
	if s.Class.UID != 2004 || s.Version != "1.3.0" || len(s.Objects) < 50 {
		t.Fatalf("ocsf_1.3.0_detection_finding.json: class %d, version %q, %d objects: not the Detection Finding", s.Class.UID, s.Version, len(s.Objects))
	}
	return &ocsfChecker{class: s.Class.ocsfObject, objects: s.Objects, types: s.Types, profiles: s.Profiles, version: s.Version}
}

// check returns the document's violations against the class: every
// attribute defined by the class or its objects (anything goes under
// unmapped), of the attribute's type, array or not as defined, enumerated
// values and their sibling captions, required attributes and constraints,
// and no attribute of a profile the document does not apply or that is
// deprecated.
func (c *ocsfChecker) check(doc []byte) []string {
	m, err := decodeNumbers(doc)
	if err != nil {
		return []string{"not a JSON object: " + err.Error()}
	}
	var vs []string
	applied := map[string]bool{}
	meta, _ := m["metadata"].(map[string]any)
	profiles, _ := meta["profiles"].([]any)
	for _, p := range profiles {
		name, _ := p.(string)
		if !slices.Contains(c.profiles, name) {
			vs = append(vs, fmt.Sprintf("metadata.profiles: %v is not an OCSF profile", p))
		}
		applied[name] = true
	}
	if v, _ := meta["version"].(string); v != c.version {
		vs = append(vs, fmt.Sprintf("metadata.version %q, checked against %s", v, c.version))
	}
	classUID, _ := m["class_uid"].(json.Number).Int64()
	activity, _ := m["activity_id"].(json.Number).Int64()
	if typeUID, _ := m["type_uid"].(json.Number).Int64(); typeUID != classUID*100+activity {
		vs = append(vs, fmt.Sprintf("type_uid %d is not class_uid*100 + activity_id", typeUID))
	}
	c.object("", m, c.class, applied, &vs)
	return vs
}

func (c *ocsfChecker) object(path string, obj map[string]any, def ocsfObject, applied map[string]bool, vs *[]string) {
	at := func(name string) string {
		if path == "" {
			return name
		}
		return path + "." + name
	}
	for name, v := range obj {
		attr, ok := def.Attributes[name]
		if !ok {
			*vs = append(*vs, at(name)+": not an attribute here in OCSF "+c.version+" (only unmapped may hold others)")
			continue
		}
		if attr.Profile != "" && !applied[attr.Profile] {
			*vs = append(*vs, at(name)+": belongs to the "+attr.Profile+" profile, which metadata.profiles does not apply")
		}
		if attr.Deprecated {
			*vs = append(*vs, at(name)+": deprecated")
		}
		c.value(at(name), v, attr, applied, vs)
		if attr.Enum != nil && attr.Sibling != "" {
			if sib, ok := obj[attr.Sibling]; ok {
				id := fmt.Sprint(v)
				if s, _ := sib.(string); id != "99" && s != attr.Enum[id] {
					*vs = append(*vs, fmt.Sprintf("%s: %q is not the caption of %s %s (%q)", at(attr.Sibling), sib, name, id, attr.Enum[id]))
				}
			}
		}
	}
	for name, attr := range def.Attributes {
		if attr.Req == "required" && (attr.Profile == "" || applied[attr.Profile]) {
			if _, ok := obj[name]; !ok {
				*vs = append(*vs, at(name)+": required, absent")
			}
		}
	}
	present := func(names []string) int {
		n := 0
		for _, name := range names {
			if _, ok := obj[name]; ok {
				n++
			}
		}
		return n
	}
	if cs := def.Constraints.AtLeastOne; len(cs) > 0 && present(cs) == 0 {
		*vs = append(*vs, fmt.Sprintf("%s: needs at least one of %v", cmpOr(path, "document"), cs))
	}
	if cs := def.Constraints.JustOne; len(cs) > 0 && present(cs) != 1 {
		*vs = append(*vs, fmt.Sprintf("%s: needs exactly one of %v", cmpOr(path, "document"), cs))
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (c *ocsfChecker) value(path string, v any, attr ocsfAttr, applied map[string]bool, vs *[]string) {
	values := []any{v}
	if arr, ok := v.([]any); ok {
		if !attr.Array {
			*vs = append(*vs, path+": an array, but the attribute is not")
		}
		values = arr
	} else if attr.Array {
		*vs = append(*vs, path+": not an array, but the attribute is one")
	}
	for i, x := range values {
		p := path
		if attr.Array {
			p = fmt.Sprintf("%s.%d", path, i)
		}
		if x == nil {
			*vs = append(*vs, p+": null")
			continue
		}
		if attr.Type == "object" {
			// OCSF's generic object (unmapped): any keys.
			if _, ok := x.(map[string]any); !ok {
				*vs = append(*vs, fmt.Sprintf("%s: %T where an object belongs", p, x))
			}
			continue
		}
		if obj, ok := c.objects[attr.Type]; ok {
			m, isObj := x.(map[string]any)
			if !isObj {
				*vs = append(*vs, fmt.Sprintf("%s: %T where the %s object belongs", p, x, attr.Type))
				continue
			}
			c.object(p, m, obj, applied, vs)
			continue
		}
		if msg := c.scalarProblem(attr.Type, x); msg != "" {
			*vs = append(*vs, p+": "+msg)
		}
		if attr.Enum != nil {
			if _, ok := attr.Enum[fmt.Sprint(x)]; !ok {
				*vs = append(*vs, fmt.Sprintf("%s: %v is not one of the enumerated values", p, x))
			}
		}
	}
}

// scalarProblem checks x against an OCSF data type, following the type's
// base types: the first base type that is a JSON type decides the JSON
// type; regex, max_len and range of every type on the way apply.
func (c *ocsfChecker) scalarProblem(typ string, x any) string {
	for t := typ; t != ""; t = c.types[t].Type {
		def, ok := c.types[t]
		if !ok {
			return "type " + t + " is not an OCSF type"
		}
		str, isStr := x.(string)
		num, isNum := x.(json.Number)
		if def.Regex != "" && (!isStr || !compiled(def.Regex).MatchString(str)) {
			return fmt.Sprintf("%v does not match %s's pattern", x, t)
		}
		if def.MaxLen > 0 && isStr && utf8.RuneCountInString(str) > def.MaxLen {
			return fmt.Sprintf("%d characters, %s allows %d", utf8.RuneCountInString(str), t, def.MaxLen)
		}
		if len(def.Range) == 2 {
			if n, err := num.Int64(); !isNum || err != nil || n < def.Range[0] || n > def.Range[1] {
				return fmt.Sprintf("%v is outside %s's range %v", x, t, def.Range)
			}
		}
		switch t {
		case "string_t":
			if !isStr {
				return fmt.Sprintf("%T where %s wants a string", x, typ)
			}
		case "integer_t":
			if n, err := strconv.ParseInt(string(num), 10, 32); !isNum || err != nil || n != int64(int32(n)) {
				return fmt.Sprintf("%v is not a 32-bit integer (%s)", x, typ)
			}
		case "long_t":
			if _, err := strconv.ParseInt(string(num), 10, 64); !isNum || err != nil {
				return fmt.Sprintf("%v is not a 64-bit integer (%s)", x, typ)
			}
		case "float_t":
			if _, err := num.Float64(); !isNum || err != nil {
				return fmt.Sprintf("%v is not a number (%s)", x, typ)
			}
		case "boolean_t":
			if _, ok := x.(bool); !ok {
				return fmt.Sprintf("%v is not a boolean", x)
			}
		case "json_t":
		case "url_t":
			if u, err := url.Parse(str); err != nil || u.Scheme == "" {
				return fmt.Sprintf("%q is not an absolute URL", str)
			}
		}
	}
	return ""
}

// TestLargeOCSFAlertsConform: a matching record whose user agent is
// 700 KB, or 100 KB (whose alert fits the topic whole), encoded in OCSF and
// made to fit the default topic limit as the consumer does (EncodeRecord,
// then FitAlert), conforms to the official schema: OCSF 1.3's string_t
// allows 65,535 characters, and raw_data is the whole source event. A
// string cut for it is listed with the whole value's length and SHA-256,
// computed here from the event itself.
func TestLargeOCSFAlertsConform(t *testing.T) {
	ocsfc := loadOCSFChecker(t)
	maxLen := ocsfc.types["string_t"].MaxLen
	if maxLen != 65535 {
		t.Fatalf("string_t max_len %d in the schema file, want OCSF 1.3's 65535", maxLen)
	}
	for _, tc := range []struct {
		name string
		f    matcher.Finding
	}{
		{"700 KB user agent of quotes", hugeFinding(t, `"`, 350_000)},
		{"100 KB user agent, alert under the limit", hugeFinding(t, "a", 100_000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n := utf8.RuneCount(tc.f.Event.Original); n <= maxLen {
				t.Fatalf("the event is %d characters: the case proves nothing", n)
			}
			whole, err := EncodeRecord(OCSF{}, tc.f, Source{Topic: "cloudtrail", Partition: 3, Offset: 7}, detected, "alerts")
			if err != nil {
				t.Fatal(err)
			}
			out, err := FitAlert(OCSF{}, whole, DefaultMaxMessageBytes)
			if err != nil {
				t.Fatal(err)
			}
			if vs := ocsfc.check(out.Value); len(vs) > 0 {
				t.Errorf("%d violations of OCSF %s in the %d-byte alert:\n%s", len(vs), ocsfc.version, len(out.Value), strings.Join(vs, "\n"))
			}
			var doc struct {
				RawData  string `json:"raw_data"`
				Unmapped struct {
					QW struct {
						Truncated []struct {
							Field  string `json:"field"`
							Bytes  int    `json:"bytes"`
							SHA256 string `json:"sha256"`
						} `json:"truncated"`
					} `json:"quarantine_watch"`
				} `json:"unmapped"`
			}
			if err := json.Unmarshal(out.Value, &doc); err != nil {
				t.Fatal(err)
			}
			original := string(tc.f.Event.Original)
			if !strings.HasPrefix(original, doc.RawData) || len(doc.RawData) < 1000 {
				t.Errorf("raw_data (%d bytes) is not a prefix of the event (%d bytes)", len(doc.RawData), len(original))
			}
			sum := sha256.Sum256(tc.f.Event.Original)
			listed := false
			for _, tr := range doc.Unmapped.QW.Truncated {
				if tr.Field == "raw_data" {
					listed = true
					if tr.Bytes != len(original) || tr.SHA256 != hex.EncodeToString(sum[:]) {
						t.Errorf("raw_data listed as %d bytes, sha256 %s; the event is %d bytes, sha256 %x", tr.Bytes, tr.SHA256, len(original), sum)
					}
				}
			}
			if !listed {
				t.Errorf("raw_data is not listed as truncated: %+v", doc.Unmapped.QW.Truncated)
			}
			t.Logf("event %d bytes; alert %d bytes, fitted %d; raw_data %d characters", len(original), len(whole.Value), len(out.Value), utf8.RuneCountInString(doc.RawData))
		})
	}
}

// TestConformanceCheckersCatch: each checker reports each kind of defect
// it exists for, on a document that is otherwise clean, so that 0
// violations means something.
func TestConformanceCheckersCatch(t *testing.T) {
	ecsc, ocsfc := loadECSChecker(t), loadOCSFChecker(t)
	f := sampleFinding(t, quarantineV2, matcher.ShapeRecord)
	f.Event.TargetKind, f.Event.TargetName = matcher.TargetUser, "test-user"
	for _, tc := range []struct {
		format string
		name   string
		mutate func(map[string]any)
	}{
		{FormatECS, "clean", func(map[string]any) {}},
		{FormatECS, "field outside ECS", func(d map[string]any) { d["event"].(map[string]any)["actionn"] = "x" }},
		{FormatECS, "aws field the integration does not define", func(d map[string]any) {
			d["aws"].(map[string]any)["cloudtrail"].(map[string]any)["request_parameter"] = "x"
		}},
		{FormatECS, "ECS field of another type", func(d map[string]any) { d["event"].(map[string]any)["severity"] = "73" }},
		{FormatECS, "value not allowed", func(d map[string]any) { d["event"].(map[string]any)["type"] = []any{"role", "change"} }},
		{FormatECS, "array field not an array", func(d map[string]any) { d["event"].(map[string]any)["category"] = "iam" }},
		{FormatECS, "scalar field as an array", func(d map[string]any) { d["event"].(map[string]any)["outcome"] = []any{"success"} }},
		{FormatECS, "not an IP", func(d map[string]any) { d["source"].(map[string]any)["ip"] = "fe80::1%eth0" }},
		{FormatECS, "not a date", func(d map[string]any) { d["@timestamp"] = "yesterday" }},
		{FormatOCSF, "clean", func(map[string]any) {}},
		{FormatOCSF, "attribute outside the class", func(d map[string]any) { d["actor_user"] = "x" }},
		{FormatOCSF, "attribute of an unapplied profile", func(d map[string]any) { d["attacks"] = d["finding_info"].(map[string]any)["attacks"] }},
		{FormatOCSF, "required attribute absent", func(d map[string]any) { delete(d["finding_info"].(map[string]any), "title") }},
		{FormatOCSF, "value outside the enumeration", func(d map[string]any) { d["severity_id"] = json.Number("7") }},
		{FormatOCSF, "sibling not the caption", func(d map[string]any) { d["severity"] = "Urgent" }},
		{FormatOCSF, "wrong type", func(d map[string]any) { d["time"] = "now" }},
		{FormatOCSF, "constraint", func(d map[string]any) {
			delete(d["finding_info"].(map[string]any)["analytic"].(map[string]any), "uid")
			delete(d["finding_info"].(map[string]any)["analytic"].(map[string]any), "name")
		}},
		{FormatOCSF, "deprecated attribute", func(d map[string]any) {
			d["finding_info"].(map[string]any)["analytic"].(map[string]any)["related_analytics"] = []any{}
		}},
		{FormatOCSF, "not an array", func(d map[string]any) { d["finding_info"].(map[string]any)["data_sources"] = "AWS CloudTrail" }},
		{FormatOCSF, "type_uid inconsistent", func(d map[string]any) { d["type_uid"] = json.Number("200402") }},
		{FormatOCSF, "anything under unmapped", func(d map[string]any) { d["unmapped"].(map[string]any)["whatever"] = []any{1, "x"} }},
	} {
		t.Run(tc.format+" "+tc.name, func(t *testing.T) {
			var enc Encoder = ECS{}
			check := ecsc.check
			if tc.format == FormatOCSF {
				enc, check = OCSF{}, ocsfc.check
			}
			doc, err := enc.Encode(f, Source{Topic: "t"}, detected)
			if err != nil {
				t.Fatal(err)
			}
			d, err := decodeNumbers(doc)
			if err != nil {
				t.Fatal(err)
			}
			tc.mutate(d)
			if doc, err = json.Marshal(d); err != nil {
				t.Fatal(err)
			}
			vs := check(doc)
			clean := tc.name == "clean" || tc.name == "anything under unmapped"
			if clean && len(vs) > 0 {
				t.Errorf("violations on a clean document: %v", vs)
			}
			if !clean && len(vs) == 0 {
				t.Errorf("not caught")
			}
		})
	}
}
