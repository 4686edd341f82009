package cli

import (
	"log/slog"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/krun"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/qemu"
)

func init() {
	extraEngines = func(home string, log *slog.Logger) map[string]sandbox.Engine {
		return map[string]sandbox.Engine{
			"qemu": qemu.New(qemu.Config{Home: home, Logger: log}),
			"krun": krun.New(krun.Config{Home: home, Logger: log}),
		}
	}
	vmImage = func(cfg *image.BuildConfig) {
		cfg.Kernel = qemu.KernelStep(cfg.Agent)
		cfg.Initramfs = func(dir, agent string, k *image.Kernel) (string, error) {
			return qemu.WriteInitramfs(dir, agent, k.Modules)
		}
	}
}
