package cli

import (
	"log/slog"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/image"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/jail"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/qemu"
)

// The Linux engines: the namespace jail and QEMU microVMs.
func init() {
	engineMakers["jail"] = func(home string, log *slog.Logger) sandbox.Engine {
		return jail.New(jail.Config{Home: home, Logger: log, Net: netHost})
	}
	engineMakers["qemu"] = func(home string, log *slog.Logger) sandbox.Engine {
		return qemu.New(qemu.Config{Home: home, Logger: log, Net: netHost})
	}
	vmImage = func(cfg *image.BuildConfig) {
		cfg.Kernel = qemu.KernelStep(cfg.Agent)
		cfg.Initramfs = func(dir, agent string, k *image.Kernel) (string, error) {
			return qemu.WriteInitramfs(dir, agent, k.Modules)
		}
	}
}
