//go:build !race

package matcher_test

const raceDetector = false
