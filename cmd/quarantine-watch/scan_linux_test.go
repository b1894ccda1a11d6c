package main

import (
	"bytes"
	"compress/gzip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// maxRSS runs the test binary as quarantine-watch with args and returns
// its peak resident set size in bytes.
func maxRSS(t *testing.T, args ...string) int64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), selfEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, stderr.String())
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		t.Fatalf("no rusage for %v", args)
	}
	if !strings.Contains(stderr.String(), "1 findings, 0 malformed") {
		t.Fatalf("%v: want the one finding at the end of the file:\n%s", args, stderr.String())
	}
	return ru.Maxrss << 10 // KiB on Linux
}

// TestScanGzipBoundedMemory: a .gz file is read as a stream. 300 MB of
// newlines, compressed to a few hundred KB, then a finding at the end; the
// scan's peak RSS is measured beside that of a scan of the record alone.
func TestScanGzipBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("compresses 300 MB")
	}
	record := sampleRecord(t, "00000001-0000-4000-8000-000000000001")
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	newlines := bytes.Repeat([]byte{'\n'}, 1<<20)
	for range 300 {
		zw.Write(newlines)
	}
	zw.Write([]byte(record + "\n"))
	zw.Close()
	bomb := writeFile(t, "newlines.json.gz", buf.Bytes())
	small := writeFile(t, "record.json.gz", gzipBytes(t, []byte(record+"\n")))
	t.Logf("%d bytes of gzip inflate to %d MB", buf.Len(), 300<<20/1000000)

	base := maxRSS(t, "scan", small)
	peak := maxRSS(t, "scan", bomb)
	t.Logf("peak RSS %d MB for the record alone, %d MB with 300 MB of newlines before it", base>>20, peak>>20)
	const bound = 64 << 20
	if peak-base > bound {
		t.Errorf("scan of %d KB of gzip took %d MB more than of the record alone: want at most %d MB", buf.Len()>>10, (peak-base)>>20, bound>>20)
	}
}
