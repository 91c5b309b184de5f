package command

import (
	"errors"
	"fmt"
)

// Exit codes of meshctl. They are a public interface: CI pipelines branch on
// them, so they never change meaning. docs/reference/exit-codes.md lists them.
const (
	// ExitOK: the command did what was asked; every check passed (warnings
	// allowed).
	ExitOK = 0
	// ExitFailure: the command failed, or a check that is not a warning
	// failed.
	ExitFailure = 1
	// ExitUsage: the command line, a values file or a value was invalid;
	// nothing was changed.
	ExitUsage = 2
	// ExitTimeout: install, upgrade or uninstall gave up waiting (for
	// readiness, for deletion); what it had applied stays applied.
	ExitTimeout = 3
	// ExitRefused: the cluster's state forbids the command (install over an
	// existing mesh, upgrade or uninstall of a mesh that is not there in a
	// way that matters, uninstall while workloads are injected); nothing was
	// changed.
	ExitRefused = 4
	// ExitUnreachable: a command that asks many proxies printed a partial
	// answer because some of them could not be reached (or did not answer
	// in time); every proxy that answered is in the output.
	ExitUnreachable = 5
)

// ExitError carries an exit code to the one place that turns errors into
// codes (cli.Main).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// UsageErrorf reports invalid input: exit code 2.
func UsageErrorf(format string, args ...any) error {
	return &ExitError{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}

// Usage marks err as invalid input: exit code 2.
func Usage(err error) error { return withCode(ExitUsage, err) }

// Timeout marks err as having given up waiting: exit code 3.
func Timeout(err error) error { return withCode(ExitTimeout, err) }

// Refused marks err as forbidden by the cluster's state: exit code 4.
func Refused(err error) error { return withCode(ExitRefused, err) }

// Unreachable marks err as a partial answer: exit code 5.
func Unreachable(err error) error { return withCode(ExitUnreachable, err) }

// Silent is an error whose message was already printed (a failed check
// report); only its exit code matters.
type Silent struct{ Code int }

func (s Silent) Error() string { return fmt.Sprintf("exit status %d", s.Code) }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &ExitError{Code: code, Err: err}
}

// CodeOf maps an error to its exit code: typed errors keep theirs, anything
// else is a failure.
func CodeOf(err error) int {
	if err == nil {
		return ExitOK
	}
	var s Silent
	if errors.As(err, &s) {
		return s.Code
	}
	var e *ExitError
	if errors.As(err, &e) {
		return e.Code
	}
	return ExitFailure
}
