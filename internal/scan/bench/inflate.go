package main

import (
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/gzip"
)

// inflateMain decompresses a gzip file to nothing with klauspost/compress,
// the library scan reads .gz files with: what inflating the file costs
// this code at all.
func inflateMain(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: bench inflate FILE.gz")
		return 2
	}
	f, err := os.Open(args[0])
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	n, err := io.Copy(io.Discard, zr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintln(stdout, n)
	return 0
}
