package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
)

// dataset is the benchmark's input on disk and what the generator says it
// holds.
type dataset struct {
	Path, GzipPath string
	Truth          truth
}

// truth is the generator's ground truth for the file, written beside it
// when the file is generated, so that a cached file is checked against what
// was true when it was written.
type truth struct {
	Seed      int64    `json:"seed"`
	Documents int64    `json:"documents"` // lines of the file, one document each
	Bytes     int64    `json:"bytes"`
	GzipBytes int64    `json:"gzip_bytes"`
	Malformed int64    `json:"malformed"`
	Positives []string `json:"positives"` // eventIDs the default rule must report
}

// genConfig is the traffic of the file: single CloudTrail records, as the
// issue's 200,000-record file, with findings, near misses and malformed
// lines at the rates of a noisy trail.
func genConfig(seed int64) cloudtrailgen.Config {
	return cloudtrailgen.Config{
		Seed:           seed,
		QuarantineRate: 1e-4,
		NearMissRate:   1e-3,
		MalformedRate:  1e-3,
		Shapes:         map[cloudtrailgen.Shape]float64{cloudtrailgen.ShapeRecord: 1},
	}
}

// keepMalformed says whether a malformed value goes into the file: those
// that stay one line and that any scan, validating or not, must report
// (their framing is broken). Empty values would be blank lines, which are
// not documents, and bad gzip is binary that may hold newlines.
func keepMalformed(r cloudtrailgen.Record) bool {
	v := bytes.TrimSpace(r.Value)
	if len(v) == 0 || bytes.IndexByte(r.Value, '\n') >= 0 {
		return false
	}
	switch r.Defect {
	case cloudtrailgen.DefectTruncated, cloudtrailgen.DefectNotJSON, cloudtrailgen.DefectTooDeep:
		return v[0] != '{' || v[len(v)-1] != '}'
	}
	return false
}

// ensureDataset returns the file of records documents for seed in dir,
// generating it and its gzip copy unless they are there already.
func ensureDataset(dir string, seed int64, records int, progress func(string)) (dataset, error) {
	base := filepath.Join(dir, fmt.Sprintf("cloudtrail-seed%d-%d", seed, records))
	d := dataset{Path: base + ".ndjson", GzipPath: base + ".ndjson.gz"}
	truthPath := base + ".truth.json"
	if b, err := os.ReadFile(truthPath); err == nil {
		if err := json.Unmarshal(b, &d.Truth); err != nil {
			return d, fmt.Errorf("bench: %s: %w", truthPath, err)
		}
		st, err1 := os.Stat(d.Path)
		gz, err2 := os.Stat(d.GzipPath)
		if err1 == nil && err2 == nil && st.Size() == d.Truth.Bytes && gz.Size() == d.Truth.GzipBytes {
			return d, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return d, fmt.Errorf("bench: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return d, fmt.Errorf("bench: %w", err)
	}
	progress(fmt.Sprintf("generating %s (%d records, seed %d)", d.Path, records, seed))
	t, err := writeNDJSON(d.Path, seed, records)
	if err != nil {
		return d, err
	}
	progress("compressing it to " + d.GzipPath)
	if t.GzipBytes, err = gzipFile(d.Path, d.GzipPath); err != nil {
		return d, err
	}
	b, _ := json.MarshalIndent(t, "", " ")
	if err := os.WriteFile(truthPath, b, 0o644); err != nil {
		return d, fmt.Errorf("bench: %w", err)
	}
	d.Truth = t
	return d, nil
}

// writeNDJSON writes one generated document per line. Pretty-printed
// records (the generator indents a few) are compacted: the file is NDJSON.
func writeNDJSON(path string, seed int64, records int) (truth, error) {
	t := truth{Seed: seed}
	f, err := os.Create(path)
	if err != nil {
		return t, fmt.Errorf("bench: %w", err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	gen := cloudtrailgen.New(genConfig(seed))
	var line bytes.Buffer
	for t.Documents < int64(records) {
		r := gen.Next()
		line.Reset()
		if r.Malformed {
			if !keepMalformed(r) {
				continue
			}
			line.Write(r.Value)
			t.Malformed++
		} else if err := json.Compact(&line, r.Value); err != nil {
			return t, fmt.Errorf("bench: generated record is not JSON: %w", err)
		}
		line.WriteByte('\n')
		w.Write(line.Bytes())
		t.Bytes += int64(line.Len())
		t.Documents++
		t.Positives = append(t.Positives, r.Positives()...)
	}
	if err := w.Flush(); err != nil {
		return t, fmt.Errorf("bench: %w", err)
	}
	return t, f.Close()
}

// gzipFile compresses src to dst at gzip's default level, as a log shipper
// would, and returns the compressed size.
func gzipFile(src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	defer out.Close()
	zw := gzip.NewWriter(out)
	if _, err := io.Copy(zw, in); err != nil {
		return 0, fmt.Errorf("bench: compressing: %w", err)
	}
	if err := zw.Close(); err != nil {
		return 0, fmt.Errorf("bench: compressing: %w", err)
	}
	st, err := out.Stat()
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	return st.Size(), out.Close()
}
