package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// The bash and zsh scripts ask the binary for the words that may come
// next (urfave/cli answers --generate-bash-completion for every command),
// so they never fall out of step with it. fish gets a static script that
// urfave/cli writes from the commands and flags.
const bashCompletion = `# bash completion for wa-sidecar: source <(wa-sidecar completion bash)
_wa_sidecar() {
  local cur="${COMP_WORDS[COMP_CWORD]}"
  local words=("${COMP_WORDS[@]:0:COMP_CWORD}")
  local opts
  if [[ "$cur" == -* ]]; then
    opts=$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${words[@]}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -o bashdefault -o default -F _wa_sidecar wa-sidecar
`

const zshCompletion = `#compdef wa-sidecar
# zsh completion for wa-sidecar: source <(wa-sidecar completion zsh), after compinit
_wa_sidecar() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == -* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _wa_sidecar wa-sidecar
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script: bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: "Examples:\n" +
			"   wa-sidecar completion bash > ~/.local/share/bash-completion/completions/wa-sidecar\n" +
			"   source <(wa-sidecar completion bash)          # or this, in ~/.bashrc\n" +
			"   wa-sidecar completion zsh > \"${fpath[1]}/_wa-sidecar\"\n" +
			"   wa-sidecar completion fish > ~/.config/fish/completions/wa-sidecar.fish",
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.Args().Len() != 1 {
				return usageError("completion takes one shell: bash, zsh or fish")
			}
			switch sh := c.Args().First(); sh {
			case "bash":
				fmt.Fprint(c.App.Writer, bashCompletion)
			case "zsh":
				fmt.Fprint(c.App.Writer, zshCompletion)
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return cli.Exit("wa-sidecar: completion fish: "+err.Error(), exitError)
				}
				fmt.Fprint(c.App.Writer, s)
			default:
				return usageError("completion: unknown shell %q; use bash, zsh or fish", sh)
			}
			return nil
		},
	}
}
