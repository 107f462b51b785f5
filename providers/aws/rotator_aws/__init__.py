"""rotator's AWS Secrets Manager provider (type ``aws``) and rotation-Lambda handler.

:class:`~rotator_aws.provider.AwsProvider` is registered in the ``rotator.providers`` entry-point group;
:func:`rotator_aws.lambda_handler.handler` serves Secrets Manager's own rotation schedule.
"""

from rotator_aws.config import AwsConfig

__all__ = ["AwsConfig"]
