package check

import (
	"context"
	"fmt"
	"time"
)

// HintBase is where hints point by default: docs/check.md as the repository
// host renders it, whose headings carry the anchors.
const HintBase = "https://github.com/meshctl/mesh/blob/main/docs/check.md#"

// Defaults of Options.
const (
	DefaultRetryInterval  = time.Second
	maxRetryInterval      = 5 * time.Second
	DefaultAttemptTimeout = 30 * time.Second
)

// Options tune Run.
type Options struct {
	// Wait bounds the retries of checks marked Retry: they run again until
	// Wait has passed since Run began. Zero: every check runs once.
	Wait time.Duration
	// RetryInterval is the pause after a retried check's first failure; it
	// doubles after each failure, up to 5 s. Zero means
	// DefaultRetryInterval.
	RetryInterval time.Duration
	// AttemptTimeout bounds one attempt of one check, so an API server that
	// accepts connections and never answers cannot hang the run. Zero means
	// DefaultAttemptTimeout.
	AttemptTimeout time.Duration
	// HintBase prefixes the checks' hint anchors; empty means HintBase.
	HintBase string
}

// Run runs the categories' checks in order against s and returns their
// summary. observe, if not nil, hears every result as it comes, failed
// attempts of retried checks included (Result.Retrying), so a printer can
// show progress. A failed Fatal check ends the run. Cancelling ctx ends it
// too, with Summary.Err set.
func Run(ctx context.Context, s *State, categories []Category, opts Options, observe func(Result)) Summary {
	if observe == nil {
		observe = func(Result) {}
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = DefaultRetryInterval
	}
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = DefaultAttemptTimeout
	}
	if opts.HintBase == "" {
		opts.HintBase = HintBase
	}
	// The wait deadline is wall-clock time on this machine, unlike the
	// State's clock, which certificates and skew are judged by.
	deadline := time.Now().Add(opts.Wait)
	sum := Summary{Success: true}
	for _, cat := range categories {
		for _, c := range cat.Checks {
			if err := ctx.Err(); err != nil {
				sum.Success = false
				sum.Err = fmt.Errorf("running checks: %w", err)
				return sum
			}
			r := runCheck(ctx, s, cat.ID, c, opts, deadline, observe)
			observe(r)
			sum.Results = append(sum.Results, r)
			if r.Status() != StatusError {
				continue
			}
			sum.Success = false
			sum.TimedOut = sum.TimedOut || r.TimedOut
			if c.Severity == Fatal {
				return sum
			}
		}
	}
	return sum
}

// runCheck runs c until it passes or may not be retried, and returns its
// final result.
func runCheck(ctx context.Context, s *State, category string, c Check, opts Options, deadline time.Time, observe func(Result)) Result {
	interval := opts.RetryInterval
	for attempt := 1; ; attempt++ {
		r := Result{
			Category:    category,
			Description: c.Description,
			HintURL:     opts.HintBase + c.Hint,
			Severity:    c.Severity,
			Err:         attemptCheck(ctx, s, c, opts.AttemptTimeout),
		}
		if r.Err == nil || !c.Retry || isPermanent(r.Err) || ctx.Err() != nil {
			return r
		}
		left := time.Until(deadline)
		if left <= 0 {
			r.TimedOut = attempt > 1
			return r
		}
		r.Retrying = true
		observe(r)
		t := time.NewTimer(min(interval, left))
		select {
		case <-ctx.Done():
			t.Stop()
			r.Retrying = false
			return r
		case <-t.C:
		}
		interval = min(2*interval, maxRetryInterval)
	}
}

func attemptCheck(ctx context.Context, s *State, c Check, timeout time.Duration) (err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer func() {
		// A check is code over data from the cluster; a surprise in that
		// data must fail the check, not crash the report.
		if p := recover(); p != nil {
			err = fmt.Errorf("check panicked: %v", p)
		}
	}()
	return c.Run(ctx, s)
}
