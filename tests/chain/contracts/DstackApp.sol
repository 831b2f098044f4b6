// SPDX-License-Identifier: MIT
// DstackApp-compatible contract for kmsd's chain tests: same functions, events, checks (in the
// same order) and reason strings as the reference (attestation-reference.md §4).
pragma solidity ^0.8.22;

import "./IAppAuth.sol";
import "./Base.sol";

contract DstackApp is KmsUpgradeable, IAppAuth, IAppAuthBasicManagement {
    mapping(bytes32 => bool) public allowedComposeHashes;
    bool private _upgradesDisabled;
    bool public allowAnyDevice;
    mapping(bytes32 => bool) public allowedDeviceIds;

    event UpgradesDisabled();
    event AllowAnyDeviceSet(bool allowAny);

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
        }
        if (initialComposeHash != bytes32(0)) {
            allowedComposeHashes[initialComposeHash] = true;
            emit ComposeHashAdded(initialComposeHash);
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

    function addComposeHash(bytes32 composeHash) external onlyOwner {
        allowedComposeHashes[composeHash] = true;
        emit ComposeHashAdded(composeHash);
    }

    function removeComposeHash(bytes32 composeHash) external onlyOwner {
        allowedComposeHashes[composeHash] = false;
        emit ComposeHashRemoved(composeHash);
    }

    function setAllowAnyDevice(bool _allowAnyDevice) external onlyOwner {
        allowAnyDevice = _allowAnyDevice;
        emit AllowAnyDeviceSet(_allowAnyDevice);
    }

    function addDevice(bytes32 deviceId) external onlyOwner {
        allowedDeviceIds[deviceId] = true;
        emit DeviceAdded(deviceId);
    }

    function removeDevice(bytes32 deviceId) external onlyOwner {
        allowedDeviceIds[deviceId] = false;
        emit DeviceRemoved(deviceId);
    }

    function isAppAllowed(IAppAuth.AppBootInfo calldata bootInfo)
        external
        view
        override
        returns (bool isAllowed, string memory reason)
    {
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
    }

    uint256[50] private __gap;
}
