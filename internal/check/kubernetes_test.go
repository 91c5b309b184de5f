package check

import (
	"context"
	"testing"
)

func TestKubernetesVersion(t *testing.T) {
	c := kubernetesVersion().Checks[0]
	for version, ok := range map[string]bool{"v1.28.9": false, "v1.29.0-gke.100": true, "v1.36.3+k3s1": true} {
		s := NewState(Config{})
		s.serverVersion = version
		if err := c.Run(context.Background(), s); (err == nil) != ok {
			t.Errorf("%s: %v", version, err)
		}
	}
}
