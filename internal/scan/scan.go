// Package scan evaluates files offline: CloudTrail in any shape the matcher
// knows, plain or gzip-compressed, one JSON document, many concatenated, or
// one per line. Findings are written as the same documents the service
// writes to the alerts topic. It reads files; it does not touch Kafka.
//
// A file is read as a stream, in bounded memory, by three stages: a reader
// fills chunks (inflating gzip member by member), a framer cuts documents
// from them (split.go), and the caller's goroutine evaluates each chunk's
// documents on a matcher.Pool, the service's, and writes what they gave in
// input order. gzip members are kept apart: each ends any document that is
// not valid JSON, so that a CloudWatch Logs payload cut short in a Firehose
// object does not take the payloads after it with it.
//
// With Config.Context, findings of the Elastic rule and attach-failed are
// followed by their context documents, computed over the same files
// (context.go).
package scan

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

// Config says what to scan and where to write.
type Config struct {
	Matcher matcher.Config
	Encoder producer.Encoder // nil means ECS
	Stdout  io.Writer        // findings, one JSON document per line
	Stderr  io.Writer        // malformed input, progress, summary
	Stdin   io.Reader        // read for the file name "-"
	// Progress shows a progress line on Stderr, for a terminal.
	Progress bool
	Now      func() time.Time
	// Workers is the number of matcher workers; 0 means one per CPU.
	Workers int
	// Context follows each finding of the Elastic rule or attach-failed
	// with its context document, computed over the same files (context.go).
	Context bool
	// Lookback is the context's window before the finding; 0 means
	// lookback.DefaultLookback.
	Lookback time.Duration
}

// Summary counts what a scan saw.
type Summary struct {
	Files      int
	Unreadable int // files that could not be opened or read to the end
	Values     int // documents evaluated: JSON values, or lines that are not JSON
	Findings   int
	Malformed  int // values or events reported malformed
	Contexts   int // context documents written
}

// ErrUnreadable is returned by Run when at least one file could not be
// read to its end.
var ErrUnreadable = errors.New("scan: some files could not be read")

// Run scans each file in turn. It returns ErrUnreadable (wrapped) when a
// file could not be read to its end; malformed content is reported and
// counted, never fatal.
func Run(cfg Config, files []string) (Summary, error) {
	if cfg.Encoder == nil {
		cfg.Encoder = producer.ECS{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Context && slices.Contains(files, "-") {
		return Summary{}, errStdinContext
	}
	m, err := matcher.New(cfg.Matcher)
	if err != nil {
		return Summary{}, fmt.Errorf("scan: %w", err)
	}
	limit := cfg.Matcher.MaxValueBytes
	if limit == 0 {
		limit = matcher.DefaultMaxValueBytes
	}
	s := &scanner{
		cfg:   cfg,
		pool:  m.NewPool(cfg.Workers),
		sc:    m.NewScanner(),
		out:   bufio.NewWriterSize(cfg.Stdout, 64<<10),
		bufs:  make(bufPool, 8),
		limit: limit,
	}
	defer s.out.Flush()
	if cfg.Progress {
		s.total = totalSize(files)
	}
	for _, name := range files {
		s.sum.Files++
		if err := s.file(name, s.batch); err != nil {
			s.sum.Unreadable++
			fmt.Fprintf(cfg.Stderr, "scan: %s: %v\n", name, err)
		}
	}
	s.endProgress()
	if cfg.Context {
		s.writeHeld(files)
		s.endProgress()
	}
	fmt.Fprintf(cfg.Stderr, "scan: %d files (%d unreadable), %d documents, %d findings, %d malformed\n",
		s.sum.Files, s.sum.Unreadable, s.sum.Values, s.sum.Findings, s.sum.Malformed)
	if cfg.Context {
		fmt.Fprintf(cfg.Stderr, "scan: %d context documents\n", s.sum.Contexts)
	}
	if s.sum.Unreadable > 0 {
		return s.sum, fmt.Errorf("%w: %d of %d", ErrUnreadable, s.sum.Unreadable, s.sum.Files)
	}
	return s.sum, nil
}

type scanner struct {
	cfg      Config
	pool     *matcher.Pool
	sc       *matcher.Scanner // for documents split again (resplit)
	split    splitter
	results  []matcher.Result
	findings []matcher.Finding
	out      *bufio.Writer
	bufs     bufPool
	limit    int
	sum      Summary

	// The file being read and where the last position was counted.
	name    string
	lineAt  int64 // line of lineOff
	lineOff int64 // an offset in the content

	// With Config.Context: the alerts held (context.go), the candidates
	// buffer, and where the files start, once read.
	held      []pending
	cands     []matcher.Candidate
	dataStart time.Time
	timesRead bool

	total        int64 // bytes of all files on disk, to decide on progress
	scanned      int64 // bytes of the files done, as decompressed
	lastProgress time.Time
}

// file scans one file through the reader and framer stages, handing each
// batch of documents to handle.
func (s *scanner) file(name string, handle func(*batch)) error {
	var r io.Reader
	if name == "-" {
		r = s.cfg.Stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	c, err := openContent(r)
	if err != nil {
		return err
	}
	chunks := make(chan *chunk, 2)
	batches := make(chan *batch, 2)
	stop := make(chan struct{})
	defer close(stop)
	go readChunks(c, s.bufs, chunks, stop)
	fr := &framer{limit: s.limit, pool: s.bufs}
	go fr.run(chunks, batches, stop)

	s.name, s.lineAt, s.lineOff = name, 1, 0
	var readErr error
	var done int64
	for b := range batches {
		handle(b)
		done = b.off + int64(b.used)
		s.progress(done)
		if b.err != nil {
			readErr = fmt.Errorf("reading after byte %d: %w", done, b.err)
		}
		s.bufs.put(b.buf)
	}
	s.scanned += done
	return readErr
}

// batch evaluates the documents of b on the pool and writes what they gave,
// in order.
func (s *scanner) batch(b *batch) {
	if cap(s.results) < len(b.values) {
		s.results = append(s.results[:cap(s.results)], make([]matcher.Result, len(b.values)-cap(s.results))...)
	}
	results := s.results[:len(b.values)]
	if len(b.values) > 0 {
		s.pool.Match(b.values, results)
	}
	i := 0
	for _, d := range b.docs {
		switch {
		case d.tooLarge:
			s.sum.Values++
			s.sum.Malformed++
			fmt.Fprintf(s.cfg.Stderr, "scan: %s: document larger than %d bytes (--max-record-bytes), skipped\n", s.position(b, d.start), s.limit)
			continue
		case d.line && results[i].Err != nil:
			s.resplit(b, d, &results[i])
		default:
			s.emit(b, d.start, &results[i])
		}
		i++
	}
}

// resplit handles a line taken for one document that the matcher found
// fault with: it may be several documents, which are cut as anywhere else
// and evaluated one by one. When it is one, the result stands.
func (s *scanner) resplit(b *batch, d doc, res *matcher.Result) {
	line := b.region[d.start:d.end]
	if n, st := s.split.valueEnd(line); st != valueOK || n == len(line) {
		// Not valid JSON (which its line is, as a document) or exactly
		// one value.
		s.emit(b, d.start, res)
		return
	}
	for pos := 0; ; {
		start := skipSpace(line, pos)
		if start == len(line) {
			return
		}
		end, _ := s.split.docEnd(line, start, -1, true)
		r := s.sc.Match(line[start:end], s.findings)
		s.emit(b, d.start+start, &r)
		s.findings = r.Findings[:0]
		pos = end
	}
}

// emit writes the findings of the document at region[start:] and reports
// its error.
func (s *scanner) emit(b *batch, start int, res *matcher.Result) {
	s.sum.Values++
	if len(res.Findings) > 0 {
		src := producer.Source{Topic: "file:" + s.name, Partition: 0, Offset: b.off + int64(start)}
		detected := s.cfg.Now()
		for _, f := range res.Findings {
			doc, err := s.cfg.Encoder.Encode(f, src, detected)
			if err != nil {
				fmt.Fprintf(s.cfg.Stderr, "scan: %s: encoding finding: %v\n", s.position(b, start), err)
				continue
			}
			s.sum.Findings++
			if s.cfg.Context {
				s.held = append(s.held, pending{doc: bytes.Clone(doc), finding: f})
				continue
			}
			s.out.Write(doc)
			s.out.WriteByte('\n')
		}
	}
	if res.Err != nil {
		s.sum.Malformed++
		fmt.Fprintf(s.cfg.Stderr, "scan: %s: %v\n", s.position(b, start), res.Err)
	}
}

// position names a document by file, line and byte offset in the content
// (decompressed). Lines are counted from the last position named, which
// is never after it.
func (s *scanner) position(b *batch, start int) string {
	off := b.off + int64(start)
	if s.lineOff < b.off {
		s.lineAt, s.lineOff = b.line, b.off
	}
	s.lineAt += int64(bytes.Count(b.region[s.lineOff-b.off:start], []byte{'\n'}))
	s.lineOff = off
	return fmt.Sprintf("%s:%d (byte %d)", s.name, s.lineAt, off)
}

func totalSize(files []string) int64 {
	var n int64
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			n += st.Size()
		}
	}
	return n
}

// progressMin is the input size below which no progress is shown.
const progressMin = 16 << 20

func (s *scanner) progress(done int64) {
	if !s.cfg.Progress || s.total < progressMin || time.Since(s.lastProgress) < 200*time.Millisecond {
		return
	}
	s.lastProgress = time.Now()
	fmt.Fprintf(s.cfg.Stderr, "\rscan: %d documents, %d findings, %.0f MB", s.sum.Values, s.sum.Findings, float64(s.scanned+done)/1e6)
}

func (s *scanner) endProgress() {
	if !s.lastProgress.IsZero() {
		fmt.Fprintln(s.cfg.Stderr)
	}
}
