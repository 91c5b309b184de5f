package inject

import (
	"encoding/json"
	"fmt"
)

// Status is the value of the meshctl.dev/injected annotation: which version
// injected the pod template and exactly what it added, so that uninject and
// re-injection remove that and nothing else.
type Status struct {
	// Version is the mesh version that injected.
	Version string `json:"version"`
	// InitContainers, Containers and Volumes name the items injection
	// added to those lists.
	InitContainers []string `json:"initContainers,omitempty"`
	Containers     []string `json:"containers,omitempty"`
	Volumes        []string `json:"volumes,omitempty"`
	// Annotations names the annotations injection added besides this one.
	Annotations []string `json:"annotations,omitempty"`
	// Created lists the keys that did not exist and that injection added
	// whole, by path from the pod template: "metadata",
	// "metadata.annotations", "spec.initContainers", "spec.volumes".
	Created []string `json:"created,omitempty"`
}

func parseStatus(v string) (Status, error) {
	var s Status
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return s, fmt.Errorf("reading the %s annotation: %w", annotationInjected, err)
	}
	return s, nil
}

func (s Status) created(path string) bool {
	for _, c := range s.Created {
		if c == path {
			return true
		}
	}
	return false
}

func (s Status) encode() string {
	b, err := json.Marshal(s)
	if err != nil {
		panic("inject: encoding the status annotation: " + err.Error())
	}
	return string(b)
}
