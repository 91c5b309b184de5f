package config

import (
	"github.com/meshctl/mesh/internal/meshapi"
)

// Set converts the file's services into the model the controller pushes,
// so that a file and a push compile through the same code. The file's
// spelling stays as it was: an endpoint of weight 0 is out of rotation
// (in a Set, weight 0 means 1), so it is left out; every port has a
// numeric target port. c must be validated, with defaults applied.
func (c *Config) Set() *meshapi.Set {
	set := &meshapi.Set{Services: make(map[string]*meshapi.ServiceState, len(c.Services))}
	for _, s := range c.Services {
		svc := &meshapi.Service{Namespace: s.Namespace, Name: s.Name, Addresses: s.Addresses}
		for _, p := range s.Ports {
			proto := meshapi.ProtocolDetect
			if p.Protocol == ProtocolOpaque {
				proto = meshapi.ProtocolOpaque
			}
			svc.Ports = append(svc.Ports, meshapi.ServicePort{Port: uint16(p.Port), TargetPort: uint16(p.TargetPort), Protocol: proto})
		}
		st := &meshapi.ServiceState{Service: svc}
		for _, e := range s.Endpoints {
			if e.Weight != nil && *e.Weight == 0 {
				continue
			}
			w := 1
			if e.Weight != nil {
				w = *e.Weight
			}
			st.Endpoints = append(st.Endpoints, meshapi.Endpoint{Address: e.Address, Weight: uint32(w), Identity: e.Identity, Meshed: e.Meshed})
		}
		set.Services[s.Namespace+"/"+s.Name] = st
	}
	return set
}
