// Package scan evaluates files offline: CloudTrail in any shape the matcher
// knows, plain or gzip-compressed, one JSON document, many concatenated, or
// one per line. Findings are written as the same documents the service
// writes to the alerts topic. It reads files; it does not touch Kafka.
package scan

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
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
}

// Summary counts what a scan saw.
type Summary struct {
	Files      int
	Unreadable int // files that could not be opened or read to the end
	Values     int // JSON documents (or base64 lines) evaluated
	Findings   int
	Malformed  int // values or events reported malformed
}

// ErrUnreadable is returned by Run when at least one file could not be read.
var ErrUnreadable = errors.New("scan: some files could not be read")

// Run scans each file in turn. It returns ErrUnreadable (wrapped) when a
// file could not be read; malformed content is reported and counted, never
// fatal.
func Run(cfg Config, files []string) (Summary, error) {
	if cfg.Encoder == nil {
		cfg.Encoder = producer.ECS{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m, err := matcher.New(cfg.Matcher)
	if err != nil {
		return Summary{}, fmt.Errorf("scan: %w", err)
	}
	s := &scanner{cfg: cfg, sc: m.NewScanner(), out: bufio.NewWriter(cfg.Stdout)}
	defer s.out.Flush()
	if cfg.Progress {
		s.total = totalSize(files)
	}
	for _, name := range files {
		s.sum.Files++
		if err := s.file(name); err != nil {
			s.sum.Unreadable++
			fmt.Fprintf(cfg.Stderr, "scan: %s: %v\n", name, err)
		}
	}
	s.endProgress()
	fmt.Fprintf(cfg.Stderr, "scan: %d files (%d unreadable), %d documents, %d findings, %d malformed\n",
		s.sum.Files, s.sum.Unreadable, s.sum.Values, s.sum.Findings, s.sum.Malformed)
	if s.sum.Unreadable > 0 {
		return s.sum, fmt.Errorf("%w: %d of %d", ErrUnreadable, s.sum.Unreadable, s.sum.Files)
	}
	return s.sum, nil
}

type scanner struct {
	cfg          Config
	sc           *matcher.Scanner
	out          *bufio.Writer
	sum          Summary
	findings     []matcher.Finding
	total        int64 // bytes of all files on disk, to decide on progress
	scanned      int64 // bytes of the files done, as decompressed
	lastProgress time.Time
}

// maxFileBytes bounds what one file may decompress to: a CloudTrail log
// file is a few MB.
const maxFileBytes = 1 << 30

func (s *scanner) file(name string) error {
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
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) && !isCloudWatchGzip(br) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		r = zr
	} else {
		r = br
	}
	data, err := io.ReadAll(io.LimitReader(r, maxFileBytes+1))
	if err != nil {
		return fmt.Errorf("reading: %w", err)
	}
	if len(data) > maxFileBytes {
		return fmt.Errorf("larger than %d bytes", maxFileBytes)
	}
	s.values(name, data)
	s.scanned += int64(len(data))
	return nil
}

// isCloudWatchGzip reports whether a gzip file holds one CloudWatch Logs
// payload, which the matcher takes compressed as it arrives from Kafka,
// rather than a gzip-compressed file of JSON documents.
func isCloudWatchGzip(br *bufio.Reader) bool {
	head, _ := br.Peek(br.Size())
	zr, err := gzip.NewReader(bytes.NewReader(head))
	if err != nil {
		return false
	}
	start := make([]byte, 512)
	n, _ := io.ReadFull(zr, start)
	return bytes.Contains(start[:n], []byte(`"logEvents"`)) || bytes.Contains(start[:n], []byte(`"messageType"`))
}

// values splits data into documents and evaluates each. A document is a
// JSON value (concatenated or one per line), or a line that is not JSON
// (base64 of gzip, or garbage, which the matcher reports).
func (s *scanner) values(name string, data []byte) {
	if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
		s.eval(name, data, 0, data)
		return
	}
	for off := 0; off < len(data); {
		rest := data[off:]
		skip := len(rest) - len(bytes.TrimLeft(rest, " \t\r\n"))
		off += skip
		rest = rest[skip:]
		if len(rest) == 0 {
			break
		}
		var n int
		if rest[0] == '{' || rest[0] == '[' {
			dec := json.NewDecoder(bytes.NewReader(rest))
			var raw json.RawMessage
			if err := dec.Decode(&raw); err == nil {
				n = int(dec.InputOffset())
			}
		}
		if n == 0 {
			// Not a JSON document: evaluate up to the end of the line,
			// so one bad line does not hide the lines after it.
			n = bytes.IndexByte(rest, '\n')
			if n < 0 {
				n = len(rest)
			}
		}
		s.eval(name, data, off, rest[:n])
		off += n
		s.progress(int64(off))
	}
}

func (s *scanner) eval(name string, data []byte, off int, value []byte) {
	s.sum.Values++
	res := s.sc.Match(value, s.findings)
	s.findings = res.Findings[:0]
	src := producer.Source{Topic: "file:" + name, Partition: 0, Offset: int64(off)}
	detected := s.cfg.Now()
	for _, f := range res.Findings {
		doc, err := s.cfg.Encoder.Encode(f, src, detected)
		if err != nil {
			fmt.Fprintf(s.cfg.Stderr, "scan: %s: encoding finding: %v\n", position(name, data, off), err)
			continue
		}
		s.out.Write(doc)
		s.out.WriteByte('\n')
		s.sum.Findings++
	}
	if res.Err != nil {
		s.sum.Malformed++
		fmt.Fprintf(s.cfg.Stderr, "scan: %s: %v\n", position(name, data, off), res.Err)
	}
}

// position names a document by file, line and byte offset.
func position(name string, data []byte, off int) string {
	line := bytes.Count(data[:off], []byte{'\n'}) + 1
	return fmt.Sprintf("%s:%d (byte %d)", name, line, off)
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
