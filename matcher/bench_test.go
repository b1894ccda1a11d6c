package matcher_test

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// The benchmarks run over corpora made by the demo's traffic generator.
// Each op is one pass over a whole corpus; ns/record is reported beside it.
// The bounds sit beside the matcher in one run:
//
//   - ScanBound: bytes.IndexByte for a byte absent from each record, the
//     cost of reading every byte once at memchr speed;
//   - EncodingJSON: the naive way, a full encoding/json decode of every
//     record (gzip and base64 payloads decompressed first).
//
// Compare ratios within one run: absolute figures drift on shared machines.

const corpusRecords = 4096

type corpus struct {
	values [][]byte
	absent []byte // a byte value absent from each record, for the scan bound
	bytes  int64
}

func newCorpus(cfg cloudtrailgen.Config, n int) *corpus {
	gen := cloudtrailgen.New(cfg)
	c := &corpus{}
	for len(c.values) < n {
		r := gen.Next()
		if r.Malformed {
			continue
		}
		c.values = append(c.values, r.Value)
		c.absent = append(c.absent, absentByte(r.Value))
		c.bytes += int64(len(r.Value))
	}
	return c
}

func absentByte(b []byte) byte {
	var seen [256]bool
	for _, c := range b {
		seen[c] = true
	}
	for _, c := range []byte{0xff, 0xfe, 0x00, 0x01} {
		if !seen[c] {
			return c
		}
	}
	for c := range 256 {
		if !seen[c] {
			return byte(c)
		}
	}
	return 0xff // every byte occurs (a large compressed record): the scan stops early, favouring the bound
}

// nonMatching is the demo generator's mix with no positives and no near misses.
func nonMatchingConfig(seed int64) cloudtrailgen.Config {
	return cloudtrailgen.Config{Seed: seed}
}

func matchingConfig(seed int64) cloudtrailgen.Config {
	return cloudtrailgen.Config{Seed: seed, QuarantineRate: 1}
}

func shapeConfig(seed int64, s cloudtrailgen.Shape, quarantine float64) cloudtrailgen.Config {
	return cloudtrailgen.Config{Seed: seed, QuarantineRate: quarantine, Shapes: map[cloudtrailgen.Shape]float64{s: 1}}
}

func (c *corpus) report(b *testing.B) {
	b.SetBytes(c.bytes)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(c.values)), "ns/record")
}

func benchMatcher(b *testing.B, c *corpus, cfg matcher.Config) {
	m, err := matcher.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	s := m.NewScanner()
	var findings []matcher.Finding
	b.ReportAllocs()
	for b.Loop() {
		for _, v := range c.values {
			res := s.Match(v, findings)
			findings = res.Findings[:0]
		}
	}
	c.report(b)
}

func benchBound(b *testing.B, c *corpus) {
	b.ReportAllocs()
	for b.Loop() {
		for i, v := range c.values {
			if bytes.IndexByte(v, c.absent[i]) == 0 {
				b.Fatal("absent byte found")
			}
		}
	}
	c.report(b)
}

// naiveDecode is what a loop without this project would do: decompress what
// is compressed and decode every record fully with encoding/json.
func naiveDecode(v []byte) (any, error) {
	if bytes.HasPrefix(v, []byte{0x1f, 0x8b}) || bytes.HasPrefix(v, []byte("H4sI")) {
		if v[0] == 'H' {
			raw, err := base64.StdEncoding.DecodeString(string(v))
			if err != nil {
				return nil, err
			}
			v = raw
		}
		zr, err := gzip.NewReader(bytes.NewReader(v))
		if err != nil {
			return nil, err
		}
		if v, err = io.ReadAll(zr); err != nil {
			return nil, err
		}
	}
	var doc any
	if err := json.Unmarshal(v, &doc); err != nil {
		return nil, err
	}
	// The records inside: what a naive loop must decode to evaluate them.
	top, _ := doc.(map[string]any)
	if wrapper, ok := top["awslogs"].(map[string]any); ok {
		data, _ := wrapper["data"].(string)
		return naiveDecode([]byte(data))
	}
	if events, ok := top["logEvents"].([]any); ok {
		for _, e := range events {
			ev, _ := e.(map[string]any)
			msg, _ := ev["message"].(string)
			var rec any
			json.Unmarshal([]byte(msg), &rec)
		}
	}
	if msg, ok := top["message"].(string); ok {
		var rec any
		json.Unmarshal([]byte(msg), &rec)
	}
	return doc, nil
}

func benchEncodingJSON(b *testing.B, c *corpus) {
	b.ReportAllocs()
	for b.Loop() {
		for _, v := range c.values {
			if _, err := naiveDecode(v); err != nil {
				b.Fatal(err)
			}
		}
	}
	c.report(b)
}

var (
	nonMatching = newCorpus(nonMatchingConfig(1), corpusRecords)
	matching    = newCorpus(matchingConfig(2), 1024)
)

// BenchmarkNonMatching is the fast path over a realistic mix in which no
// record matches (the demo generator's distribution without positives or
// near misses): the case of well over 99.9% of real traffic.
func BenchmarkNonMatching(b *testing.B) { benchMatcher(b, nonMatching, matcher.Config{}) }

// BenchmarkNonMatchingUncompressed splits the mix: the same generator's
// distribution without its compressed CloudWatch payloads (gzip, base64,
// awslogs), beside its own bound, to show what inflating costs the mix.
func BenchmarkNonMatchingUncompressed(b *testing.B) {
	c := uncompressedCorpus()
	b.Run("matcher", func(b *testing.B) { benchMatcher(b, c, matcher.Config{}) })
	b.Run("bound", func(b *testing.B) { benchBound(b, c) })
}

// uncompressedCorpus is BenchmarkNonMatchingUncompressed's records.
func uncompressedCorpus() *corpus {
	shapes := cloudtrailgen.DefaultShapes()
	for _, s := range []cloudtrailgen.Shape{cloudtrailgen.ShapeCloudWatchGzip, cloudtrailgen.ShapeCloudWatchBase64, cloudtrailgen.ShapeCloudWatchAWSLogs} {
		delete(shapes, s)
	}
	return newCorpus(cloudtrailgen.Config{Seed: 1, Shapes: shapes}, corpusRecords)
}

// BenchmarkNonMatchingValidated is the same with Config.Validate, which
// checks every record fully so that every malformed one is reported.
func BenchmarkNonMatchingValidated(b *testing.B) {
	benchMatcher(b, nonMatching, matcher.Config{Validate: true})
}

// BenchmarkNonMatchingAllRules is BenchmarkNonMatching with every companion
// rule enabled: the prefilter also searches the legacy inline policy name.
func BenchmarkNonMatchingAllRules(b *testing.B) {
	benchMatcher(b, nonMatching, matcher.Config{Rules: matcher.AllRules})
}

// BenchmarkScanBound is one IndexByte pass over the same bytes.
func BenchmarkScanBound(b *testing.B) { benchBound(b, nonMatching) }

// BenchmarkEncodingJSON is the naive full decode, over the non-matching and
// the matching corpus.
func BenchmarkEncodingJSON(b *testing.B) {
	b.Run("non-matching", func(b *testing.B) { benchEncodingJSON(b, nonMatching) })
	b.Run("matching", func(b *testing.B) { benchEncodingJSON(b, matching) })
}

// BenchmarkMatching is the matcher over records that all match, in every
// shape: the slow path's cost.
func BenchmarkMatching(b *testing.B) { benchMatcher(b, matching, matcher.Config{}) }

// BenchmarkMatchingCost times the matcher and the naive encoding/json decode
// on the matching corpus in alternate passes, so that both see the same
// machine, and reports their ratio (target: at most 1/3).
func BenchmarkMatchingCost(b *testing.B) {
	m, err := matcher.New(matcher.Config{})
	if err != nil {
		b.Fatal(err)
	}
	s := m.NewScanner()
	var findings []matcher.Finding
	var spent [2]time.Duration
	b.ReportAllocs()
	for b.Loop() {
		// Each pass starts on a collected heap, so that neither pays for
		// the other's garbage (the naive decode makes 30 times as much).
		b.StopTimer()
		runtime.GC()
		b.StartTimer()
		start := time.Now()
		for _, v := range matching.values {
			res := s.Match(v, findings)
			findings = res.Findings[:0]
		}
		spent[0] += time.Since(start)
		b.StopTimer()
		runtime.GC()
		b.StartTimer()
		start = time.Now()
		for _, v := range matching.values {
			if _, err := naiveDecode(v); err != nil {
				b.Fatal(err)
			}
		}
		spent[1] += time.Since(start)
	}
	n := float64(b.N) * float64(len(matching.values))
	b.ReportMetric(float64(spent[0].Nanoseconds())/n, "matcher-ns/record")
	b.ReportMetric(float64(spent[1].Nanoseconds())/n, "encoding-json-ns/record")
	b.ReportMetric(float64(spent[0])/float64(spent[1]), "matcher/encoding-json")
}

// BenchmarkShapes splits the figures by input shape.
func BenchmarkShapes(b *testing.B) {
	shapes := []cloudtrailgen.Shape{
		cloudtrailgen.ShapeRecord, cloudtrailgen.ShapeS3Object, cloudtrailgen.ShapeEventBridge,
		cloudtrailgen.ShapeCloudWatchLogs, cloudtrailgen.ShapeCloudWatchGzip, cloudtrailgen.ShapeCloudWatchBase64,
		cloudtrailgen.ShapeCloudWatchAWSLogs, cloudtrailgen.ShapeAgentMessage, cloudtrailgen.ShapeECS,
	}
	for _, s := range shapes {
		non := newCorpus(shapeConfig(3, s, 0), 512)
		match := newCorpus(shapeConfig(4, s, 1), 128)
		b.Run(s.String()+"/non-matching", func(b *testing.B) { benchMatcher(b, non, matcher.Config{}) })
		b.Run(s.String()+"/non-matching-bound", func(b *testing.B) { benchBound(b, non) })
		b.Run(s.String()+"/matching", func(b *testing.B) { benchMatcher(b, match, matcher.Config{}) })
		b.Run(s.String()+"/matching-encoding-json", func(b *testing.B) { benchEncodingJSON(b, match) })
	}
}

// BenchmarkPool compares one worker with two on one 4,096-record batch of
// the non-matching mix, with the results in preallocated slots.
func BenchmarkPool(b *testing.B) {
	m, err := matcher.New(matcher.Config{})
	if err != nil {
		b.Fatal(err)
	}
	results := make([]matcher.Result, len(nonMatching.values))
	for _, workers := range []int{1, 2} {
		p := m.NewPool(workers)
		b.Run("workers="+string(rune('0'+workers)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Match(nonMatching.values, results)
			}
			nonMatching.report(b)
		})
	}
}

// BenchmarkPoolScaling runs the same 4,096-record batch through a pool of
// one worker and a pool of two in alternate passes, so that both see the same
// machine, and reports the speed-up (one worker's time over two workers').
// On a 2-core machine the second worker shares the cores with the Go runtime
// and whatever else runs; on N idle cores the speed-up should approach N
// until memory bandwidth bounds it, since workers share only the counter.
func BenchmarkPoolScaling(b *testing.B) {
	m, err := matcher.New(matcher.Config{})
	if err != nil {
		b.Fatal(err)
	}
	results := make([]matcher.Result, len(nonMatching.values))
	pools := []*matcher.Pool{m.NewPool(1), m.NewPool(2)}
	var spent [2]time.Duration
	b.ReportAllocs()
	for b.Loop() {
		for i, p := range pools {
			start := time.Now()
			p.Match(nonMatching.values, results)
			spent[i] += time.Since(start)
		}
	}
	n := float64(b.N) * float64(len(nonMatching.values))
	b.ReportMetric(float64(spent[0].Nanoseconds())/n, "1-worker-ns/record")
	b.ReportMetric(float64(spent[1].Nanoseconds())/n, "2-workers-ns/record")
	b.ReportMetric(float64(spent[0])/float64(spent[1]), "speedup")
}

// BenchmarkAllRulesCost times the faithful rule alone and every rule on the
// non-matching mix in alternate passes, so that both see the same machine:
// it reports each one's ns/record and their ratio (the cost of the companion
// rules on the fast path).
func BenchmarkAllRulesCost(b *testing.B) {
	faithful, err := matcher.New(matcher.Config{})
	if err != nil {
		b.Fatal(err)
	}
	all, err := matcher.New(matcher.Config{Rules: matcher.AllRules})
	if err != nil {
		b.Fatal(err)
	}
	scanners := []*matcher.Scanner{faithful.NewScanner(), all.NewScanner()}
	var spent [2]time.Duration
	for b.Loop() {
		for i, s := range scanners {
			start := time.Now()
			for _, v := range nonMatching.values {
				s.Match(v, nil)
			}
			spent[i] += time.Since(start)
		}
	}
	n := float64(b.N) * float64(len(nonMatching.values))
	b.ReportMetric(float64(spent[0].Nanoseconds())/n, "faithful-ns/record")
	b.ReportMetric(float64(spent[1].Nanoseconds())/n, "all-rules-ns/record")
	b.ReportMetric(float64(spent[1])/float64(spent[0]), "all/faithful")
}

// BenchmarkIdentitySearch is the look-back's identity search
// (Scanner.Select with an IdentityFilter) over BenchmarkNonMatching's
// record mix, none of which holds the identities, beside the matcher on the
// same records in alternate passes. It reports both per record and their
// ratio, for a user name alone and for the name with four access keys (a
// later pass of lookback.Collect searches keys; the streaming look-back
// will search both at once).
func BenchmarkIdentitySearch(b *testing.B) {
	m, err := matcher.New(matcher.Config{})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		ids  []string
	}{
		{"name", []string{"ledger-sync"}},
		{"name+4keys", []string{"ledger-sync", "AKIA0LEDGERSYNC00001", "AKIA0LEDGERSYNC00002", "ASIA0LEDGERSYNC00003", "AKIA0LEDGERSYNC00004"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			f, err := matcher.NewIdentityFilter(c.ids)
			if err != nil {
				b.Fatal(err)
			}
			s := m.NewScanner()
			var findings []matcher.Finding
			var cands []matcher.Candidate
			var spent [2]time.Duration
			b.ReportAllocs()
			b.SetBytes(2 * nonMatching.bytes)
			for b.Loop() {
				start := time.Now()
				for _, v := range nonMatching.values {
					res := s.Match(v, findings)
					findings = res.Findings[:0]
				}
				spent[0] += time.Since(start)
				start = time.Now()
				for _, v := range nonMatching.values {
					cands, err = s.Select(v, f, cands)
					if err != nil || len(cands) > 0 {
						b.Fatalf("a non-matching record gave %d candidates, error %v", len(cands), err)
					}
				}
				spent[1] += time.Since(start)
			}
			n := float64(b.N) * float64(len(nonMatching.values))
			b.ReportMetric(float64(spent[0].Nanoseconds())/n, "matcher-ns/record")
			b.ReportMetric(float64(spent[1].Nanoseconds())/n, "identity-ns/record")
			b.ReportMetric(float64(spent[1])/float64(spent[0]), "identity/matcher")
		})
	}
}
