package sandbox

// Images a box may ask for by reference: the manager asks an ImageSource
// (the OCI store, wired by the CLI) to turn create_box's image into a local
// image, pulling it if needed, and applies the image's config to the box.

import (
	"context"
	"maps"
	"slices"

	"github.com/boxlite-ai/boxlite-mcp/persist"
)

// ImageSource resolves the image of a new box. Implementations are safe
// for concurrent use.
type ImageSource interface {
	// Resolve returns the local image for ref: an image on this host by
	// name, or an OCI reference pulled as the server's policy says.
	// progress, when not nil, is called as a pull goes.
	Resolve(ctx context.Context, ref string, progress func(ImageProgress)) (*ResolvedImage, error)
}

// ImageProgress is the state of an image pull.
type ImageProgress struct {
	Done, Total int64  // bytes of the current phase (Total 0: unknown or none)
	Message     string // what is happening, e.g. "downloading 12.0 MiB of 40.0 MiB"
}

// ResolvedImage is a local image and the config its boxes get.
type ResolvedImage struct {
	Name      string   // local image name (home/images/<name>)
	Reference string   // the OCI reference it came from, if any
	Env       []string // KEY=VALUE, under the box's own env
	WorkDir   string   // default directory of runs
	UID, GID  *uint32  // default user of runs (nil: root)
}

// resolveImage turns req.Image into a local image name through the
// configured ImageSource (none: names are used as they are).
func (m *Manager) resolveImage(ctx context.Context, req *CreateRequest) (*ResolvedImage, error) {
	if m.cfg.Images == nil || req.Image == "" {
		return &ResolvedImage{Name: req.Image}, nil
	}
	ri, err := m.cfg.Images.Resolve(ctx, req.Image, req.Progress)
	if err != nil {
		return nil, err
	}
	req.Image = ri.Name
	return ri, nil
}

// apply gives spec the image's config: its env under the box's own
// variables, and the defaults of runs.
func (ri *ResolvedImage) apply(spec *Spec) {
	if len(ri.Env) > 0 {
		env := map[string]string{}
		for _, kv := range ri.Env {
			for i := 0; i < len(kv); i++ {
				if kv[i] == '=' {
					env[kv[:i]] = kv[i+1:]
					break
				}
			}
		}
		maps.Copy(env, spec.Env)
		spec.Env = env
	}
	spec.WorkDir, spec.UID, spec.GID = ri.WorkDir, ri.UID, ri.GID
}

// DefaultWorkDir is where runs start in a box whose image names no
// working directory.
const DefaultWorkDir = "/root"

// runDefaults fills what a run left unset from the box's image config: the
// working directory and the user (each when its pointer is not nil).
func (s Spec) runDefaults(cwd *string, uid, gid **uint32) {
	if s.RuntimeImageConfig {
		return // the agent runs as, and where, the runtime started it
	}
	if cwd != nil && *cwd == "" {
		*cwd = s.WorkDir
		if *cwd == "" {
			*cwd = DefaultWorkDir
		}
	}
	if uid != nil && gid != nil && *uid == nil && *gid == nil && s.UID != nil {
		u, g := *s.UID, uint32(0)
		if s.GID != nil {
			g = *s.GID
		}
		*uid, *gid = &u, &g
	}
}

// withDefaults resolves ref and fills a run's defaults from its box, which
// it returns (for withAgentOn: one lookup per call). env (when not nil) gets the env a claimed
// pooled box's agent started without, under the run's own entries.
func (m *Manager) withDefaults(ctx context.Context, owner, ref string, cwd *string, uid, gid **uint32, env *[]string) (*persist.Box, error) {
	r, err := m.resolve(ctx, owner, ref)
	if err != nil {
		return nil, err
	}
	spec := toBox(r).Spec
	spec.runDefaults(cwd, uid, gid)
	if env != nil && len(spec.ClaimEnv) > 0 {
		keys := slices.Sorted(maps.Keys(spec.ClaimEnv))
		late := make([]string, 0, len(keys)+len(*env))
		for _, k := range keys {
			late = append(late, k+"="+spec.ClaimEnv[k])
		}
		*env = append(late, *env...) // later entries win in the agent
	}
	return r, nil
}
