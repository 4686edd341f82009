package guestagent

import (
	"os"
	"strings"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
)

// clone makes the agent of a VM resumed from a memory snapshot into the
// agent of a new box (see wire.CloneReq): the clock stepped to the host's,
// fresh entropy mixed in and the RNG reseeded, the new host name, the new
// environment for later runs, and the network configured again. Every
// step is tried; the call fails, naming the ones that did not take, if any.
func (s *Server) clone(c *call, req *wire.CloneReq) error {
	var failed []string
	if err := setClock(req.TimeUnixNano); err != nil {
		failed = append(failed, "clock: "+err.Error())
	}
	if err := reseedRandom(req.Seed); err != nil {
		failed = append(failed, "random: "+err.Error())
	}
	if err := setHostname(req.Hostname); err != nil {
		failed = append(failed, "hostname: "+err.Error())
	}
	os.Clearenv()
	for _, kv := range req.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			os.Setenv(k, v)
		}
	}
	if s.cfg.Renetwork != nil {
		if err := s.cfg.Renetwork(); err != nil {
			failed = append(failed, "network: "+err.Error())
		}
	}
	if len(failed) > 0 {
		s.log.Error("clone identity incomplete", "failed", failed)
		return c.fail(wire.Errorf(wire.CodeInternal, "clone: %s", strings.Join(failed, "; ")))
	}
	s.log.Info("cloned", "hostname", req.Hostname)
	return c.result(&wire.Result{})
}
