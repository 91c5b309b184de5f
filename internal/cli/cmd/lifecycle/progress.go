package lifecycle

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/meshctl/mesh/internal/cli/command"
	"github.com/meshctl/mesh/internal/cli/ui"
	"github.com/meshctl/mesh/internal/install"
)

// addReadinessWait registers --wait of the commands that wait for the
// control plane to become ready (install, upgrade).
func addReadinessWait(fs *pflag.FlagSet, wait *time.Duration) {
	fs.DurationVar(wait, "wait", 5*time.Minute, "how long to wait for the control plane to be ready; 0 does not wait")
}

func checkReadinessWait(wait time.Duration) error {
	if wait < 0 {
		return command.UsageErrorf("invalid --wait %s: must not be negative", wait)
	}
	return nil
}

// progress renders install events on the error stream, one line per event;
// the control plane's readiness is printed each time it changes, with the
// reason of every pod that is not ready.
func progress(s command.Streams) install.Observer {
	p := ui.New(s.ErrOut, s.Colour && s.ErrOutIsTerminal)
	return func(e install.Event) {
		switch e.Type {
		case install.EventInfo:
			p.Println(p.Faint(e.Message))
		case install.EventApplied:
			p.Println(p.OK("applied " + e.Object.String()))
		case install.EventPruned:
			p.Println(p.OK("pruned " + e.Object.String()))
		case install.EventDeleted:
			p.Println(p.OK("deleted " + e.Object.String()))
		case install.EventWarning:
			p.Println(p.Warn(e.Message))
		case install.EventWaiting:
			for _, st := range e.Status {
				line := fmt.Sprintf("%s: %d/%d ready", st.Ref, st.Ready, st.Desired)
				if st.IsReady() {
					p.Println(p.OK(line))
					continue
				}
				p.Println(p.Wait(line))
				for _, pod := range st.Pods {
					p.Println("    " + p.Faint("pod "+pod.Name+": ") + pod.Reason)
				}
			}
		case install.EventReady:
			p.Println(p.OK("the control plane is ready"))
		}
	}
}
