package main

import (
	"bufio"
	"debug/buildinfo"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// machine describes where the benchmark ran.
type machine struct {
	nproc              int
	model              string
	memTotal           int64 // bytes
	kernel             string
	goVersion          string // of this benchmark
	binGoVersion       string // of the scanned binary
	gzip, wc           string // first lines of --version
	loadStart, loadEnd string
}

func describeMachine(bin string) machine {
	m := machine{
		nproc:     runtime.NumCPU(),
		model:     cpuModel(),
		memTotal:  memTotal(),
		goVersion: runtime.Version(),
		loadStart: loadAverage(),
		gzip:      version("gzip"),
		wc:        version("wc"),
	}
	if v, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(v))
	}
	if bi, err := buildinfo.ReadFile(bin); err == nil {
		m.binGoVersion = bi.GoVersion
	}
	return m
}

func version(cmd string) string {
	out, err := exec.Command(cmd, "--version").Output()
	if err != nil {
		return cmd + " (version unknown)"
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(first)
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// loadAverage returns the 1, 5 and 15 minute load averages.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
