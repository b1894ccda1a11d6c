// Command bench is the benchmark of `quarantine-watch scan` (make
// bench-scan). It generates a file of single CloudTrail records, one per
// line, with internal/cloudtrailgen (about 300 MB, cached on disk between
// runs, with its gzip copy and the generator's ground truth beside it), and
// runs in alternate passes, each as a process of its own:
//
//   - wc -l on the file, best of three per pass: reading the file at all;
//   - quarantine-watch scan --validate=false on it, and scan with its
//     defaults (which validate every document);
//   - gzip -dc of the gzip copy to /dev/null, best of three per pass, and
//     an in-process inflate of it with klauspost/compress (the library the
//     scan uses): decompressing the file at all;
//   - scan of the gzip copy, with its defaults and with --validate=false.
//
// Each scan's findings and its counts of documents and malformed documents
// are checked against the generator's ground truth, and with -compare
// against another quarantine-watch binary's (the one before a change). It
// prints the machine and its load average, every pass, and the median
// ratios against the targets of issue 14.
//
// It does not benchmark the matcher alone (make bench) or the service
// (make bench-e2e), and it measures files in the page cache, not a disk.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

type options struct {
	bin     string
	compare string
	dir     string
	seed    int64
	records int
	rounds  int
	bestOf  int
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "inflate" {
		os.Exit(inflateMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(benchMain(os.Args[1:], os.Stdout, os.Stderr))
}

func benchMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench-scan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	var o options
	fs.StringVar(&o.bin, "bin", "bin/quarantine-watch", "the quarantine-watch binary to benchmark")
	fs.StringVar(&o.compare, "compare", "", "another quarantine-watch binary (e.g. the one before a change): its findings and counts must be the same")
	fs.StringVar(&o.dir, "dir", filepath.Join(cache, "quarantine-watch", "bench-scan"), "where the generated files are cached")
	fs.Int64Var(&o.seed, "seed", 1, "generator seed")
	fs.IntVar(&o.records, "records", 200000, "documents in the file (about 1.5 KB each)")
	fs.IntVar(&o.rounds, "rounds", 5, "alternate passes over every contender; medians are reported")
	fs.IntVar(&o.bestOf, "best-of", 3, "runs of each bound (wc -l, gzip -dc) per pass, the fastest counted")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.rounds < 1 || o.bestOf < 1 || o.records < 1 {
		fmt.Fprintln(stderr, "bench: -rounds, -best-of and -records must be at least 1")
		return 2
	}
	b := &bench{o: o, out: stdout, log: stderr, began: time.Now()}
	if err := b.run(); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}
