// SPDX-License-Identifier: MIT
// DstackApp-compatible contract for kmsd's chain tests: same functions, events, checks (in the
// same order) and reason strings as the reference (attestation-reference.md §4), including the
// newer requireTcbUpToDate / RequireTcbUpToDateSet / PolicyChanged of Dstack-TEE/dstack.
pragma solidity ^0.8.22;

import "./IAppAuth.sol";
import "./Base.sol";

contract DstackApp is KmsUpgradeable, IAppAuth, IAppAuthBasicManagement {
    mapping(bytes32 => bool) public allowedComposeHashes;
    bool private _upgradesDisabled;
    bool public allowAnyDevice;
    mapping(bytes32 => bool) public allowedDeviceIds;
    // newer DstackApp: boot only where the platform's TCB status is "UpToDate"
    bool public requireTcbUpToDate;

    event UpgradesDisabled();
    event AllowAnyDeviceSet(bool allowAny);
    event RequireTcbUpToDateSet(bool requireUpToDate);
    // audit trail of every policy change: policy = keccak256 of its name
    event PolicyChanged(address indexed actor, bytes32 indexed policy, bytes32 indexed value, bool enabled);

    constructor() {
        _disableInitializers();
    }

    function initialize(
        address initialOwner,
        bool _disableUpgrades,
        bool _allowAnyDevice,
        bytes32 initialDeviceId,
        bytes32 initialComposeHash
    ) public initializer {
        require(initialOwner != address(0), "invalid owner address");
        _upgradesDisabled = _disableUpgrades;
        allowAnyDevice = _allowAnyDevice;
        if (initialDeviceId != bytes32(0)) {
            allowedDeviceIds[initialDeviceId] = true;
            emit DeviceAdded(initialDeviceId);
            _policy("device", initialDeviceId, true);
        }
        if (initialComposeHash != bytes32(0)) {
            allowedComposeHashes[initialComposeHash] = true;
            emit ComposeHashAdded(initialComposeHash);
            _policy("compose-hash", initialComposeHash, true);
        }
        _initOwner(initialOwner);
    }

    function supportsInterface(bytes4 interfaceId)
        public
        view
        override(KmsUpgradeable, IERC165)
        returns (bool)
    {
        return interfaceId == 0x1e079198 || interfaceId == 0x8fd37527 ||
            super.supportsInterface(interfaceId);
    }

    function _authorizeUpgrade(address) internal view override onlyOwner {
        require(!_upgradesDisabled, "Upgrades are permanently disabled");
    }

    function _policy(string memory name, bytes32 value, bool enabled) internal {
        emit PolicyChanged(msg.sender, keccak256(bytes(name)), value, enabled);
    }

    function addComposeHash(bytes32 composeHash) external onlyOwner {
        allowedComposeHashes[composeHash] = true;
        emit ComposeHashAdded(composeHash);
        _policy("compose-hash", composeHash, true);
    }

    function removeComposeHash(bytes32 composeHash) external onlyOwner {
        allowedComposeHashes[composeHash] = false;
        emit ComposeHashRemoved(composeHash);
        _policy("compose-hash", composeHash, false);
    }

    function setAllowAnyDevice(bool _allowAnyDevice) external onlyOwner {
        allowAnyDevice = _allowAnyDevice;
        emit AllowAnyDeviceSet(_allowAnyDevice);
        _policy("allow-any-device", bytes32(0), _allowAnyDevice);
    }

    function setRequireTcbUpToDate(bool _requireUpToDate) external onlyOwner {
        requireTcbUpToDate = _requireUpToDate;
        emit RequireTcbUpToDateSet(_requireUpToDate);
        _policy("require-tcb-up-to-date", bytes32(0), _requireUpToDate);
    }

    function addDevice(bytes32 deviceId) external onlyOwner {
        allowedDeviceIds[deviceId] = true;
        emit DeviceAdded(deviceId);
        _policy("device", deviceId, true);
    }

    function removeDevice(bytes32 deviceId) external onlyOwner {
        allowedDeviceIds[deviceId] = false;
        emit DeviceRemoved(deviceId);
        _policy("device", deviceId, false);
    }

    function isAppAllowed(IAppAuth.AppBootInfo calldata bootInfo)
        external
        view
        override
        returns (bool isAllowed, string memory reason)
    {
        if (requireTcbUpToDate &&
            keccak256(bytes(bootInfo.tcbStatus)) != keccak256(bytes("UpToDate"))) {
            return (false, "TCB status is not up to date");
        }
        if (!allowedComposeHashes[bootInfo.composeHash]) {
            return (false, "Compose hash not allowed");
        }
        if (!allowAnyDevice && !allowedDeviceIds[bootInfo.deviceId]) {
            return (false, "Device not allowed");
        }
        return (true, "");
    }

    function disableUpgrades() external onlyOwner {
        _upgradesDisabled = true;
        emit UpgradesDisabled();
        _policy("upgrades-disabled", bytes32(0), true);
    }

    uint256[49] private __gap;
}
