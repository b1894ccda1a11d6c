package matcher_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// TestValidatedECSDocumentAllocations: with every document validated (scan's
// default), an ECS document that is no finding costs the allocations of the
// strings its evaluation reads, not a cache per document: the object cache
// is the Scanner's, reused.
func TestValidatedECSDocumentAllocations(t *testing.T) {
	if raceDetector {
		t.Skip("the race detector's instrumentation allocates; counted without it")
	}
	raw, err := os.ReadFile(filepath.Join("..", "..", "shared", "samples", "08_ecs_normalised_attach_user_policy_elastic_integrations_expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc bytes.Buffer
	if err := json.Compact(&doc, raw); err != nil {
		t.Fatal(err)
	}
	// The same document, no longer a finding: another action.
	text := bytes.ReplaceAll(doc.Bytes(), []byte(`"action":"AttachUserPolicy"`), []byte(`"action":"ListBuckets"`))
	if bytes.Equal(text, doc.Bytes()) {
		t.Fatal("the sample's event.action is not where the test expects it")
	}
	m, err := matcher.New(matcher.Config{Validate: true})
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewScanner()
	if res := s.Match(text, nil); res.Err != nil || len(res.Findings) != 0 || res.Shape != matcher.ShapeECS {
		t.Fatalf("the document: shape %v, %d findings, err %v; want an ECS document and no finding", res.Shape, len(res.Findings), res.Err)
	}
	allocs := testing.AllocsPerRun(200, func() { s.Match(text, nil) })
	t.Logf("%.1f allocations per document", allocs)
	if allocs > 8 {
		t.Errorf("%.1f allocations per validated ECS document, want at most 8 (the strings it reads; a cache per document made 12)", allocs)
	}
}
