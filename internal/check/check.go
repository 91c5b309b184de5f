// Package check is `meshctl check`: the health checks of a cluster before
// the mesh is installed (PreInstall) and of an installed control plane
// (PostInstall), as data, one runner (Run) and three printers (table, short,
// json).
//
// A check is a description, a hint (an anchor in docs/check.md), a severity
// and a function over a State that lists each kind of the mesh's objects once
// (by the ownership label) and keeps what it fetched, so later checks work in
// memory and a run costs a few requests whatever the size of the cluster.
package check

import (
	"context"
	"errors"
)

// Severity says what a failing check means for the run.
type Severity int

const (
	// Error: the check fails the run; later checks still run.
	Error Severity = iota
	// Fatal: the check fails the run and nothing after it runs, because the
	// later checks depend on what it established (a reachable API server,
	// parseable certificates).
	Fatal
	// Warning: the check is reported but does not fail the run.
	Warning
)

// Check is one health check.
type Check struct {
	// Description says what holds when the check passes ("the controller
	// pods are ready"); it is the line users read.
	Description string
	// Hint is the anchor of the check's section in docs/check.md.
	Hint     string
	Severity Severity
	// Retry runs the check again, with backoff, until it passes or the run's
	// Wait has passed: for states that converge (pods starting). An error
	// wrapped with Permanent is not retried.
	Retry bool
	// Run performs the check; a nil error is a pass.
	Run func(ctx context.Context, s *State) error
}

// Category is an ordered group of checks, named by its ID in output.
type Category struct {
	ID     string
	Checks []Check
}

// Permanent marks a check's error as one that waiting will not fix (an image
// that cannot be pulled, a pod that cannot be scheduled), so the runner
// reports it at once instead of retrying until the deadline.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// Status is the outcome of a check, as printed.
type Status string

const (
	StatusSuccess Status = "success"
	StatusWarning Status = "warning"
	StatusError   Status = "error"
)

// Result is one check's outcome, or a failed attempt of a retried check.
type Result struct {
	Category    string
	Description string
	// HintURL is where users read what to do when the check fails.
	HintURL  string
	Severity Severity
	// Err is nil when the check passed.
	Err error
	// Retrying marks a failed attempt that will run again; the check's final
	// Result follows.
	Retrying bool
	// TimedOut marks a retried check that was still failing when the run's
	// Wait had passed.
	TimedOut bool
}

// Status is the result's outcome; a failed warning is StatusWarning.
func (r Result) Status() Status {
	switch {
	case r.Err == nil:
		return StatusSuccess
	case r.Severity == Warning:
		return StatusWarning
	}
	return StatusError
}

// Summary is the outcome of a run.
type Summary struct {
	// Success is true when no check other than a warning failed and the run
	// was not cancelled.
	Success bool
	// TimedOut is true when a failed check had been retried until the run's
	// Wait passed, so callers can tell "still converging" from "broken".
	TimedOut bool
	// Results are the final results, in order (no Retrying ones).
	Results []Result
	// Err is set when the run was cancelled before it finished.
	Err error
}
