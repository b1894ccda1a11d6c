package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
)

// caseNoise is how many generated records surround the planted case.
const caseNoise = 2000

// caseWait bounds how long the aftermath waits for the case's context
// document: the story goes on without it rather than hang the demo.
const caseWait = 30 * time.Second

// caseStory plants the case and tells it on stderr as the reader sees its
// documents: the quarantine's alert, its context document, then the
// post-quarantine findings of its watch.
type caseStory struct {
	w         io.Writer
	planted   *cloudtrailgen.Case
	aftermath []cloudtrailgen.AftermathEvent

	mu       sync.Mutex
	alertID  string // the quarantine alert's id, once read
	context  bool   // its context document was read
	findings []string
	// contextRead is closed when the context document was read.
	contextRead chan struct{}
	expected    int // post-quarantine findings the plan expects
	seen        atomic.Int64
}

func newCaseStory(w io.Writer, planted *cloudtrailgen.Case, aftermath []cloudtrailgen.AftermathEvent) *caseStory {
	s := &caseStory{w: w, planted: planted, aftermath: aftermath, contextRead: make(chan struct{})}
	for _, e := range aftermath {
		if e.Rule != "" {
			s.expected++
		}
	}
	return s
}

// plant produces the case (the user's activity before the quarantine, the
// quarantine, and noise), then, once the case's context document was read
// (or caseWait passed), the aftermath.
func (s *caseStory) plant(ctx context.Context, brokers []string, produced *atomic.Int64) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(sourceTopic), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		return fmt.Errorf("demo: case client: %w", err)
	}
	defer cl.Close()
	send := func(values [][]byte) error {
		rs := make([]*kgo.Record, len(values))
		for i, v := range values {
			rs[i] = &kgo.Record{Value: v}
		}
		if err := cl.ProduceSync(context.WithoutCancel(ctx), rs...).FirstErr(); err != nil {
			return fmt.Errorf("demo: producing the case: %w", err)
		}
		produced.Add(int64(len(rs)))
		return nil
	}
	if err := send(s.planted.Values); err != nil {
		return err
	}
	fmt.Fprintf(s.w, "demo: case: planted %d records: IAM user %s in account %s, active before AWS quarantines its key at %s\n",
		len(s.planted.Values), cloudtrailgen.CaseUserName, cloudtrailgen.CaseAccount, s.planted.QuarantineTime.Format(time.RFC3339))
	select {
	case <-s.contextRead:
	case <-time.After(caseWait):
		fmt.Fprintf(s.w, "demo: case: no context document after %v; planting the aftermath anyway\n", caseWait)
	case <-ctx.Done():
		return nil
	}
	values := make([][]byte, len(s.aftermath))
	for i, e := range s.aftermath {
		values[i] = e.Value
	}
	if err := send(values); err != nil {
		return err
	}
	fmt.Fprintf(s.w, "demo: case: planted the aftermath: %d events after the quarantine, %d of them post-quarantine findings by the plan\n",
		len(values), s.expected)
	return nil
}

// storyDoc is what the story reads of an ECS alert or context document.
type storyDoc struct {
	Message string `json:"message"`
	Event   struct {
		Kind string `json:"kind"`
		ID   string `json:"id"`
	} `json:"event"`
	Rule struct {
		Name string `json:"name"`
	} `json:"rule"`
	QuarantineWatch struct {
		AlertID string `json:"alert_id"`
		Watch   *struct {
			AlertID string `json:"alert_id"`
		} `json:"watch"`
	} `json:"quarantine_watch"`
}

// read tells the story one document of the alerts topic (context false)
// or of the context topic. Documents it cannot read (another format) are
// not part of it.
func (s *caseStory) read(context bool, value []byte) {
	var d storyDoc
	if json.Unmarshal(value, &d) != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !context && d.Event.ID == s.planted.QuarantineEventID && d.QuarantineWatch.Watch == nil:
		s.alertID = d.QuarantineWatch.AlertID
		fmt.Fprintf(s.w, "demo: case: 1. the alert %s: %s\n", s.alertID, d.Message)
	case context && s.alertID != "" && d.QuarantineWatch.AlertID == s.alertID && !s.context:
		s.context = true
		close(s.contextRead)
		fmt.Fprintf(s.w, "demo: case: 2. its context document (topic %s, key %s): %s\n", alertsTopic+".context", s.alertID, d.Message)
	case !context && s.alertID != "" && d.QuarantineWatch.Watch != nil && d.QuarantineWatch.Watch.AlertID == s.alertID:
		s.findings = append(s.findings, d.Rule.Name)
		s.seen.Add(1)
		fmt.Fprintf(s.w, "demo: case: 3. post-quarantine finding %q: %s\n", d.Rule.Name, d.Message)
	}
}

// told reports whether the aftermath's findings were all read.
func (s *caseStory) told() bool { return s.seen.Load() >= int64(s.expected) }

// summary says how the story ended.
func (s *caseStory) summary() {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.w, "demo: case: alert read %t, context document read %t, %d post-quarantine findings read (%d planned by the aftermath; the case's own events after the quarantine add theirs)\n",
		s.alertID != "", s.context, len(s.findings), s.expected)
}
