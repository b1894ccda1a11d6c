package scan

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"time"

	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/matcher/lookback"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

// With Config.Context, each finding of the Elastic rule or attach-failed is
// followed by its context document (issue 13's case file): the quarantined
// user's activity in the look-back window before the finding, computed
// over the same files, which are the window. The files are read once for
// the findings, then again for each such finding, once per round of
// lookback.Collect (the user's name, then the keys it taught); only what
// the identity filter passes is decoded. Alerts are held until the end so
// that each context document can follow its alert: findings are few.
//
// Where the files start is the earliest time written plainly in them
// ("eventTime", escaped once or not, and "@timestamp"): compressed payloads
// and other spellings are not read for it, so a window may be said to be
// cut when it is not, never the reverse.

// errStdinContext is returned for "-" with Context.
var errStdinContext = errors.New(`scan: --context reads the files more than once; "-" (stdin) cannot be read again`)

// pending is an alert held until the context documents are computed.
type pending struct {
	doc     []byte
	finding matcher.Finding
}

// wantsContext reports whether a finding gets a context document.
func wantsContext(f *matcher.Finding) bool {
	return f.Rule != nil && (f.Rule.ID == matcher.ElasticQuarantineRule.ID || f.Rule.ID == matcher.QuarantineAttachFailedRule.ID)
}

// writeHeld writes the held alerts in order, each wanting one followed by
// its context document.
func (s *scanner) writeHeld(files []string) {
	for _, p := range s.held {
		s.out.Write(p.doc)
		s.out.WriteByte('\n')
		if !wantsContext(&p.finding) {
			continue
		}
		doc, err := s.context(files, p.finding)
		if err != nil {
			fmt.Fprintf(s.cfg.Stderr, "scan: context of alert %s: %v\n", producer.EventAlertID(p.finding.Rule.ID, &p.finding.Event), err)
			continue
		}
		s.out.Write(doc)
		s.out.WriteByte('\n')
		s.sum.Contexts++
	}
}

// context computes the context document of f over files.
func (s *scanner) context(files []string, f matcher.Finding) ([]byte, error) {
	e := &f.Event
	end, err := time.Parse(time.RFC3339Nano, e.EventTime)
	if err != nil {
		return nil, fmt.Errorf("no event time to end the window at (%q)", e.EventTime)
	}
	if e.TargetKind != matcher.TargetUser || e.TargetName == "" {
		return nil, producer.ErrNoTargetUser
	}
	account := cmp.Or(e.RecipientAccountID, e.UserIdentity.AccountID)
	sum, err := lookback.New(lookback.Config{
		Subject:  lookback.Subject{Account: account, UserName: e.TargetName},
		End:      end.UTC(),
		Lookback: cmp.Or(s.cfg.Lookback, lookback.DefaultLookback),
		Exclude:  e.EventID,
	})
	if err != nil {
		return nil, err
	}
	err = lookback.Collect(sum, func(filter *matcher.IdentityFilter) error {
		for _, name := range files {
			// A file that cannot be read was reported by the findings
			// pass; the window is what could be read.
			_ = s.file(name, func(b *batch) { s.selectBatch(b, filter, sum) })
		}
		s.timesRead = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	c, err := producer.NewECSContext(f, sum.Summary(), producer.ContextWindow{
		Lookback: cmp.Or(s.cfg.Lookback, lookback.DefaultLookback), Start: sum.Start(), End: end.UTC(), DataStart: s.dataStart,
	})
	if err != nil {
		return nil, err
	}
	return producer.EncodeContext(c)
}

// selectBatch offers the candidates of b's documents to sum. A line the
// framer took for one document that is several is cut as resplit cuts it.
func (s *scanner) selectBatch(b *batch, f *matcher.IdentityFilter, sum *lookback.Summarizer) {
	i := 0
	for _, d := range b.docs {
		if d.tooLarge {
			continue
		}
		v := b.values[i]
		i++
		if !s.timesRead {
			s.dataStart = earliestTime(v, s.dataStart)
		}
		if s.selectValue(v, f, sum) == nil || !d.line {
			continue
		}
		if n, st := s.split.valueEnd(v); st != valueOK || n == len(v) {
			continue
		}
		for pos := 0; ; {
			start := skipSpace(v, pos)
			if start == len(v) {
				break
			}
			end, _ := s.split.docEnd(v, start, -1, true)
			s.selectValue(v[start:end], f, sum)
			pos = end
		}
	}
}

// selectValue offers the candidates of one document to sum. Its errors
// were reported by the findings pass; the summary counts candidates it
// could not read.
func (s *scanner) selectValue(v []byte, f *matcher.IdentityFilter, sum *lookback.Summarizer) error {
	cands, err := s.sc.Select(v, f, s.cands)
	for _, c := range cands {
		_ = sum.Add(c.Text, c.Shape)
	}
	s.cands = cands[:0]
	return err
}

var timeKeys = [][]byte{[]byte(`"eventTime":"`), []byte(`\"eventTime\":\"`), []byte(`"@timestamp":"`)}

// earliestTime returns the earlier of cur (zero: none yet) and the times
// written plainly in v.
func earliestTime(v []byte, cur time.Time) time.Time {
	for _, k := range timeKeys {
		for rest := v; ; {
			i := bytes.Index(rest, k)
			if i < 0 {
				break
			}
			rest = rest[i+len(k):]
			end := bytes.IndexByte(rest, '"')
			if end < 0 || end > 64 {
				continue
			}
			t, err := time.Parse(time.RFC3339Nano, string(bytes.TrimSuffix(rest[:end], []byte(`\`))))
			if err == nil && (cur.IsZero() || t.Before(cur)) {
				cur = t
			}
		}
	}
	return cur
}
