"""Tools an administrator runs against a keel service from outside it (UC-4.1): deployment.

Nothing here runs inside the trading process: these tools drive the
container engine the service runs on, as ``docker`` on the command line would.
"""

from keel.operations.containers import ContainerEngine, ContainerSpec, ContainerState, DockerEngine
from keel.operations.deployment import DeploymentError, DeploymentResult, DeploymentTools

__all__ = [
    "ContainerEngine",
    "ContainerSpec",
    "ContainerState",
    "DeploymentError",
    "DeploymentResult",
    "DeploymentTools",
    "DockerEngine",
]
