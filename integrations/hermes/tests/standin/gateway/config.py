"""Stand-in for gateway.config: the platform enum and config the adapter is built with."""
import enum
from dataclasses import dataclass, field


class Platform(enum.Enum):
    WHATSAPP = "whatsapp"


@dataclass
class PlatformConfig:
    enabled: bool = False
    extra: dict = field(default_factory=dict)
