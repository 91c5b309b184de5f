package check

import (
	"context"
	"errors"
	"testing"
	"time"
)

func passing(desc string) Check {
	return Check{Description: desc, Hint: "h", Run: func(context.Context, *State) error { return nil }}
}

func failing(desc string, sev Severity) Check {
	return Check{Description: desc, Hint: "h", Severity: sev, Run: func(context.Context, *State) error { return errors.New(desc + " failed") }}
}

func descriptions(rs []Result) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Description)
	}
	return out
}

func TestRunStopsAtAFatalFailure(t *testing.T) {
	cats := []Category{
		{ID: "a", Checks: []Check{passing("a1"), failing("a2", Error), failing("a3", Fatal), passing("a4")}},
		{ID: "b", Checks: []Check{passing("b1")}},
	}
	sum := Run(context.Background(), NewState(Config{}), cats, Options{}, nil)
	if sum.Success {
		t.Error("Success with failed checks")
	}
	if got := descriptions(sum.Results); len(got) != 3 || got[2] != "a3" {
		t.Errorf("ran %v, want a1 a2 a3 and nothing after the fatal a3", got)
	}
}

func TestRunPassesWithWarnings(t *testing.T) {
	cats := []Category{{ID: "a", Checks: []Check{passing("a1"), failing("a2", Warning), passing("a3")}}}
	var seen []Result
	sum := Run(context.Background(), NewState(Config{}), cats, Options{}, func(r Result) { seen = append(seen, r) })
	if !sum.Success || len(sum.Results) != 3 {
		t.Errorf("Success %v with %d results, want true with 3", sum.Success, len(sum.Results))
	}
	if len(seen) != 3 || seen[1].Status() != StatusWarning || seen[1].HintURL != HintBase+"h" {
		t.Errorf("observed %+v", seen)
	}
}

func TestRunRetriesUntilPass(t *testing.T) {
	attempts := 0
	c := Check{Description: "converges", Retry: true, Run: func(context.Context, *State) error {
		attempts++
		if attempts < 3 {
			return errors.New("not yet")
		}
		return nil
	}}
	var retries int
	sum := Run(context.Background(), NewState(Config{}), []Category{{ID: "a", Checks: []Check{c}}},
		Options{Wait: time.Minute, RetryInterval: time.Millisecond}, func(r Result) {
			if r.Retrying {
				retries++
			}
		})
	if !sum.Success || attempts != 3 || retries != 2 {
		t.Errorf("Success %v after %d attempts and %d observed retries, want true, 3, 2", sum.Success, attempts, retries)
	}
}

func TestRunRetriesUntilTheDeadline(t *testing.T) {
	attempts := 0
	c := Check{Description: "never", Retry: true, Run: func(context.Context, *State) error { attempts++; return errors.New("not yet") }}
	start := time.Now()
	sum := Run(context.Background(), NewState(Config{}), []Category{{ID: "a", Checks: []Check{c}}},
		Options{Wait: 100 * time.Millisecond, RetryInterval: 10 * time.Millisecond}, nil)
	if sum.Success || !sum.TimedOut || !sum.Results[0].TimedOut {
		t.Errorf("Success %v, TimedOut %v, want false, true", sum.Success, sum.TimedOut)
	}
	// At least one retry; how many fit in the wait depends on the
	// machine's load, which a unit test does not assert.
	if attempts < 2 {
		t.Errorf("%d attempts in 100 ms at a 10 ms interval", attempts)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 10*time.Second {
		t.Errorf("the run took %s with a wait of 100ms", d)
	}
}

func TestRunDoesNotRetryPermanentErrors(t *testing.T) {
	attempts := 0
	c := Check{Description: "stuck", Retry: true, Run: func(context.Context, *State) error {
		attempts++
		return Permanent(errors.New("ImagePullBackOff"))
	}}
	sum := Run(context.Background(), NewState(Config{}), []Category{{ID: "a", Checks: []Check{c}}}, Options{Wait: time.Minute}, nil)
	if sum.Success || sum.TimedOut || attempts != 1 {
		t.Errorf("Success %v, TimedOut %v after %d attempts, want false, false, 1", sum.Success, sum.TimedOut, attempts)
	}
	if sum.Results[0].Err.Error() != "ImagePullBackOff" {
		t.Errorf("error %q", sum.Results[0].Err)
	}
}

func TestRunWithoutWaitRunsOnce(t *testing.T) {
	attempts := 0
	c := Check{Description: "once", Retry: true, Run: func(context.Context, *State) error { attempts++; return errors.New("no") }}
	sum := Run(context.Background(), NewState(Config{}), []Category{{ID: "a", Checks: []Check{c}}}, Options{}, nil)
	if attempts != 1 || sum.TimedOut {
		t.Errorf("%d attempts, TimedOut %v; want 1, false", attempts, sum.TimedOut)
	}
}

func TestRunStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c := Check{Description: "cancels", Run: func(context.Context, *State) error { cancel(); return nil }}
	sum := Run(ctx, NewState(Config{}), []Category{{ID: "a", Checks: []Check{c, passing("after")}}}, Options{}, nil)
	if sum.Success || sum.Err == nil || len(sum.Results) != 1 {
		t.Errorf("Success %v, Err %v, %d results; want false, an error, 1", sum.Success, sum.Err, len(sum.Results))
	}
}

func TestRunReportsAPanickingCheck(t *testing.T) {
	c := Check{Description: "panics", Run: func(context.Context, *State) error { panic("nil map") }}
	sum := Run(context.Background(), NewState(Config{}), []Category{{ID: "a", Checks: []Check{c}}}, Options{}, nil)
	if sum.Success || sum.Results[0].Err == nil {
		t.Errorf("a panicking check passed: %+v", sum)
	}
}
