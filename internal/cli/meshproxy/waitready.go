package meshproxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshctl/mesh/internal/cli/incluster"
	"github.com/meshctl/mesh/internal/wellknown"
)

func newWaitReadyCmd(s incluster.Streams) *cobra.Command {
	var (
		adminPort int
		timeout   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "wait-ready",
		Short: "Wait until the proxy in this pod is ready",
		Long: `Poll the proxy's GET /ready on 127.0.0.1 until it answers 200, then exit 0;
exit 1 when --timeout passes first.

The injector runs it as the proxy container's postStart hook. The kubelet
starts a pod's containers in order and does not start the next one until the
previous one's postStart hook has returned, so the application, which comes
after the proxy, starts only once the proxy can carry its traffic.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if adminPort < 1 || adminPort > 65535 {
				return fmt.Errorf("invalid --admin-port %d", adminPort)
			}
			url := "http://127.0.0.1:" + strconv.Itoa(adminPort) + "/ready"
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			if err := waitReady(ctx, http.DefaultClient, url, 200*time.Millisecond); err != nil {
				return fmt.Errorf("waiting for the proxy at %s: %w", url, err)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&adminPort, "admin-port", wellknown.ProxyAdminPort, "the proxy's admin port")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait")
	return cmd
}

// waitReady polls url until it answers 200 or ctx ends; the last failure is
// in the error, so a timeout says whether the proxy was not listening or not
// ready.
func waitReady(ctx context.Context, client *http.Client, url string, interval time.Duration) error {
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("answered %s", resp.Status)
		}
		if ctx.Err() == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = errors.New("no answer")
			}
			return fmt.Errorf("%w (last: %v)", context.Cause(ctx), last)
		case <-time.After(interval):
		}
	}
}
