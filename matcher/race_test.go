//go:build race

package matcher_test

// raceDetector is set when the tests run under the race detector, which
// makes the adversarial values (32 MB each, no concurrency) take minutes:
// make test runs TestAdversarialValues without it.
const raceDetector = true
